"""TVSD reader: MATLAB v7.3 orientation, image order (struct and cellstr forms), areas, ceilings, images."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from visreps.data import DatasetError, open_dataset
from visreps.data.published.tvsd import parse_area_map

try:
    from .published_fixtures import build_tvsd, visreps_home, write_mat73  # noqa: F401
except ImportError:
    from published_fixtures import build_tvsd, visreps_home, write_mat73  # noqa: F401


@pytest.fixture(scope="module")
def tvsd(tmp_path_factory):
    root = tmp_path_factory.mktemp("tvsd")
    return root, build_tvsd(root)


def responses(dataset, monkey, area):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        return dataset.responses(monkey, area), [str(w.message) for w in caught]


def hand_ceiling(reps):
    """reps (images, repetitions, units): ncsnr² / (ncsnr² + 1/n) with pooled within-image noise variance."""
    noise = reps.var(axis=1, ddof=1).mean(axis=0)
    total = reps.reshape(-1, reps.shape[2]).var(axis=0, ddof=1)
    ncsnr2 = np.clip(total - noise, 0, None) / noise
    return ncsnr2 / (ncsnr2 + 1 / reps.shape[1])


@pytest.mark.parametrize("monkey,area,first,last", [("monkeyF", "V1", 0, 511), ("monkeyF", "IT", 512, 831),
                                                    ("monkeyF", "V4", 832, 1023), ("monkeyN", "V4", 512, 767),
                                                    ("monkeyN", "IT", 768, 1023)])
def test_responses_follow_the_published_arrays(tvsd, monkey, area, first, last):
    root, truth = tvsd
    r, _ = responses(open_dataset("tvsd", root), monkey, area)
    t = truth["monkeys"][monkey]
    electrodes = np.arange(first, last + 1)
    electrodes = electrodes[np.isfinite(t["train"][electrodes]).all(axis=1)]
    np.testing.assert_array_equal(r.info["electrodes"], electrodes)
    assert list(r.train_ids) == t["train_ids"] and list(r.test_ids) == truth["test_stems"]
    np.testing.assert_allclose(r.train, t["train"][electrodes].T, rtol=1e-6)
    np.testing.assert_allclose(r.test, t["test"][electrodes].T, rtol=1e-6)
    np.testing.assert_allclose(r.test_repetitions, t["reps"][electrodes].transpose(1, 2, 0), rtol=1e-6)
    np.testing.assert_allclose(r.noise_ceiling, hand_ceiling(t["reps"][electrodes].transpose(1, 2, 0)), rtol=1e-4)
    assert r.info["oracle"].shape == (len(electrodes),) and r.info["SNR"].shape == (len(electrodes),)


def test_nan_electrode_is_dropped_with_a_warning(tvsd):
    root, _ = tvsd
    r, messages = responses(open_dataset("tvsd", root), "monkeyF", "IT")
    assert 700 not in r.info["electrodes"] and r.n_units == 319
    assert r.info["dropped_units"] == [700] and r.info["n_units_original"] == 320
    assert any("dropped 1 electrode" in m for m in messages)


def test_area_maps():
    assert parse_area_map(None)["monkeyF"]["IT"] == (512, 831)  # the dataset's own norm_MUA.m
    assert parse_area_map("study")["monkeyF"]["V4"] == (512, 831)  # the original study code
    custom = parse_area_map("monkeyF:V1=0-9,IT=10-19")
    assert custom == {"monkeyF": {"V1": (0, 9), "IT": (10, 19)}}
    assert parse_area_map({"N": {"V1": [0, 3]}}) == {"monkeyN": {"V1": (0, 3)}}
    with pytest.raises(DatasetError, match="overlap"):
        parse_area_map("monkeyF:V1=0-9,IT=5-19")


def test_study_mapping_and_subject_option(tvsd):
    root, truth = tvsd
    dataset = open_dataset("tvsd", root, subjects="F", areas="study")
    assert dataset.subjects() == ["monkeyF"] and dataset.regions() == ["V1", "V4", "IT"]
    r, _ = responses(dataset, "monkeyF", "V4")
    assert r.info["electrodes"][0] == 512 and r.info["electrodes"][-1] == 831
    with pytest.raises(DatasetError, match="unknown monkey"):
        open_dataset("tvsd", root, subjects=["monkeyX"])


def test_images_by_stem(tvsd, tmp_path):
    root, truth = tvsd
    dataset = open_dataset("tvsd", root)
    assert dataset.stimulus_ids()[:3] == truth["monkeys"]["monkeyF"]["train_ids"][:3]
    assert len(dataset.stimulus_ids()) == len(truth["train_stems"]) + len(truth["test_stems"])
    assert dataset.load_image(truth["test_stems"][0]).size == (8, 8)
    explicit = open_dataset("tvsd", root, things_root=root / "THINGS")
    assert explicit.images_dir == root / "THINGS" / "object_images"
    with pytest.raises(DatasetError, match="not a stimulus"):
        dataset.load_image("zebra_01b")


def test_bad_input(tmp_path):
    root = tmp_path / "tvsd"
    build_tvsd(root, n_electrodes=1024, nan_electrode=None)
    missing = root / "THINGS/object_images/abacus/abacus_03d.jpg"
    missing.unlink()
    with pytest.raises(DatasetError, match=r"1 of 29 stimulus images are not under .*abacus/abacus_03d\.jpg"):
        open_dataset("tvsd", root)
    Image.new("RGB", (8, 8)).save(missing)
    (root / "monkeyN/_logs/things_imgs.mat").unlink()
    with pytest.raises(DatasetError, match="missing file monkeyN/_logs/things_imgs.mat"):
        open_dataset("tvsd", root, things_root=tmp_path / "elsewhere")
    write_mat73(root / "monkeyF/THINGS_normMUA.mat", {"train_MUA": np.zeros((1024, 23)), "test_MUA": np.zeros((1024, 5)),
                                                     "test_MUA_reps": np.zeros((1024, 5, 2))})
    dataset = open_dataset("tvsd", root, subjects=["monkeyF"], things_root=root / "THINGS", cache=False)
    with pytest.raises(DatasetError, match=r"THINGS_normMUA.mat train_MUA is 1024 × 23 \(electrodes × images\): 23 "
                                           r"images, but monkeyF/_logs/things_imgs.mat lists 24 images in train_imgs.*"
                                           r"download both files of monkeyF again"):
        dataset.responses("monkeyF", "V1")
    (root / "monkeyF/THINGS_normMUA.mat").write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        open_dataset("tvsd", root, subjects=["monkeyF"], things_root=root / "THINGS").responses("monkeyF", "V1")
