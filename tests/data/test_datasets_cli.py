"""`visreps datasets check`: summaries, JSON output, exit status and the name of the file at fault."""

from __future__ import annotations

import argparse
import json

import pytest

from visreps.stages import datasets as datasets_stage

try:
    from .published_fixtures import build_nsd, build_things, build_tvsd, visreps_home  # noqa: F401
except ImportError:
    from published_fixtures import build_nsd, build_things, build_tvsd, visreps_home  # noqa: F401


def check(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="visreps datasets")
    datasets_stage.add_arguments(parser)
    return datasets_stage.run(parser.parse_args(["check", *argv]))


@pytest.fixture(scope="module")
def nsd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd")
    build_nsd(root, subjects=("subj01",))
    return root


def test_nsd_text_summary(nsd_root, capsys):
    assert check("nsd", "--root", str(nsd_root), "--option", "regions=V1,FFA") == 0
    out = capsys.readouterr().out
    assert "nsd (neural): OK" in out and "subj01: train" in out and "FFA" in out and "units" in out


def test_nsd_json_summary_and_deep_counts(nsd_root, capsys):
    assert check("nsd", "--root", str(nsd_root), "--json", "--option", "regions=[V1]", "--option", "sessions=1-2") == 0
    quick = json.loads(capsys.readouterr().out)
    assert quick["ok"] and quick["options"] == {"regions": ["V1"], "sessions": "1-2"}
    record = quick["summary"]["subjects"]["subj01"]["V1"]
    assert record["n_test"] > 0 and record["n_repetitions"] == 3
    assert check("nsd", "--root", str(nsd_root), "--json", "--deep", "--option", "regions=[V1]") == 0
    deep = json.loads(capsys.readouterr().out)
    assert deep["summary"]["subjects"]["subj01"]["V1"]["n_units"] == record["n_units"] - 1  # constant voxel dropped
    assert any("dropped 1 voxel" in w for w in deep["summary"]["warnings"])


def test_missing_file_named_relative_to_root(tmp_path, capsys):
    root = tmp_path / "nsd"
    build_nsd(root, subjects=("subj01",))
    (root / "nsddata/freesurfer/subj01/label/floc-faces.mgz.ctab").unlink()
    assert check("nsd", "--root", str(root)) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "missing file nsddata/freesurfer/subj01/label/floc-faces.mgz.ctab" in err
    assert check("nsd", "--root", str(root), "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and "floc-faces.mgz.ctab" in report["error"]


def test_usage_errors(nsd_root, capsys):
    assert check("nsd", "--root", str(nsd_root), "--option", "colour=red") == 2
    assert "unknown option 'colour'" in capsys.readouterr().err
    assert check("nsd", "--root", str(nsd_root), "--option", "sessions") == 2
    assert check("mnist", "--root", str(nsd_root)) == 2
    assert "known datasets" in capsys.readouterr().err


def test_tvsd_and_things(tmp_path, capsys):
    build_tvsd(tmp_path / "tvsd", nan_electrode=None)
    assert check("tvsd", "--root", str(tmp_path / "tvsd"), "--json") == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["subjects"]["monkeyN"]["IT"]["n_units"] == 256
    assert summary["subjects"]["monkeyF"]["IT"]["n_repetitions"] == 6
    build_things(tmp_path / "things")
    assert check("things", "--root", str(tmp_path / "things")) == 0
    out = capsys.readouterr().out
    assert "stimuli: 20 (39 images)" in out and "behaviour" in out


def test_generic_dataset_missing_root(tmp_path, capsys):
    pytest.importorskip("visreps.data.generic.reader")
    assert check("generic", "--root", str(tmp_path / "absent")) == 1
    assert "FAILED" in capsys.readouterr().err


def test_generic_demo_dataset(tmp_path, capsys):
    demo = pytest.importorskip("visreps.data.demo")
    config = demo.DemoDataConfig(n_train_images=64, image_size=32, n_subjects=1, n_train_stimuli_per_subject=16,
                                 n_test_stimuli=16, n_voxels=5, n_images_per_concept=1)
    built = demo.generate_demo_dataset(config, root=tmp_path / "demo", progress=False)
    assert check("generic", "--root", str(built.brain_root), "--json") == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["kind"] == "neural" and summary["subjects"]
