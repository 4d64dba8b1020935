"""NSD as partially downloaded: no nsd_stimuli.hdf5 (responses only), a session missing from a subject's series."""

from __future__ import annotations

import argparse
import json
import shutil
import warnings

import numpy as np
import pytest

from visreps.data import DatasetError, open_dataset
from visreps.stages import datasets as datasets_stage

try:
    from .published_fixtures import build_nsd, visreps_home  # noqa: F401
except ImportError:
    from published_fixtures import build_nsd, visreps_home  # noqa: F401

STIMULI = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
BETAS = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"


def check(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="visreps datasets")
    datasets_stage.add_arguments(parser)
    return datasets_stage.run(parser.parse_args(["check", *argv]))


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    """Three sessions of subj01 with images; copies of it are made partial by each test."""
    root = tmp_path_factory.mktemp("nsd") / "full"
    build_nsd(root, subjects=("subj01",), n_sessions=3)
    return root


@pytest.fixture()
def copy(download, tmp_path):
    root = tmp_path / "nsd"
    shutil.copytree(download, root)
    return root


def responses(root, region="V1", **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's constant voxel
        return open_dataset("nsd", root, regions=[region], cache=False, **options).responses("subj01", region)


def test_responses_open_without_the_stimulus_file(download, copy, capsys):
    full = responses(download)
    (copy / STIMULI).unlink()
    dataset = open_dataset("nsd", copy, regions=["V1"], cache=False)
    assert not dataset.has_images
    partial = responses(copy)
    np.testing.assert_array_equal(partial.train, full.train)
    np.testing.assert_array_equal(partial.test_repetitions, full.test_repetitions)
    assert list(partial.test_ids) == list(full.test_ids) and len(dataset.stimulus_ids()) > 0
    with pytest.raises(DatasetError, match=rf"missing file {STIMULI} \(expected at {copy / STIMULI}\)"):
        dataset.load_image(dataset.stimulus_ids()[0])
    summary = dataset.summary()
    assert summary["images"] is None and any(STIMULI in w and "images" in w for w in summary["warnings"])
    assert check("nsd", "--root", str(copy), "--option", "regions=V1") == 0
    assert f"warning: {STIMULI} is missing" in capsys.readouterr().out


def test_images_return_once_the_file_is_there(download, copy):
    shutil.move(copy / STIMULI, copy.parent / "stimuli.hdf5")
    dataset = open_dataset("nsd", copy, regions=["V1"])
    with pytest.raises(DatasetError, match="nsd_stimuli.hdf5"):
        dataset.load_image("nsd00300")
    shutil.move(copy.parent / "stimuli.hdf5", copy / STIMULI)
    assert dataset.load_image("nsd00300").getpixel((0, 0)) == (300 % 256, 300 // 256, 0)


def test_a_gap_in_the_sessions_is_an_error_naming_the_file(copy, capsys):
    (copy / BETAS / "betas_session02.hdf5").unlink()
    with pytest.raises(DatasetError, match=r"subj01 has sessions 1, 3 of 40 but lacks betas_session02\.hdf5"):
        open_dataset("nsd", copy)
    assert check("nsd", "--root", str(copy)) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "betas_session02.hdf5" in err and "sessions=" in err
    assert check("nsd", "--root", str(copy), "--json") == 1
    assert "betas_session02.hdf5" in json.loads(capsys.readouterr().out)["error"]
    # choosing the sessions on purpose opens it, and the responses record them
    chosen = responses(copy, sessions="1,3")
    assert chosen.info["sessions"] == [1, 3] and chosen.info["sessions_published"] == 40
    assert responses(copy, sessions=[1]).train.shape[0] < chosen.train.shape[0]
    assert check("nsd", "--root", str(copy), "--option", "sessions=[1,3]", "--option", "regions=V1") == 0
    out = capsys.readouterr().out
    assert "sessions 1, 3 (2 of 40)" in out and "published sessions present" not in out


def test_sessions_found_are_reported(download, capsys):
    dataset = open_dataset("nsd", download, regions=["V1"])
    summary = dataset.summary()
    assert summary["sessions"] == {"subj01": {"used": [1, 2, 3], "published": 40}}
    assert summary["images"] == STIMULI
    assert any("subj01: 3 of 40 published sessions present (1-3)" in w for w in summary["warnings"])
    assert responses(download).info["sessions"] == [1, 2, 3]
    assert check("nsd", "--root", str(download), "--option", "regions=V1") == 0
    out = capsys.readouterr().out
    assert "subj01: train" in out and "sessions 1-3 (3 of 40)" in out
    assert check("nsd", "--root", str(download), "--json", "--option", "regions=V1") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["sessions"]["subj01"]["used"] == [1, 2, 3]


def test_a_missing_first_session_is_a_gap_too(copy):
    (copy / BETAS / "betas_session01.hdf5").unlink()
    with pytest.raises(DatasetError, match=r"sessions 2-3 of 40 but lacks betas_session01\.hdf5"):
        open_dataset("nsd", copy)
    assert responses(copy, sessions="2-3").info["sessions"] == [2, 3]
