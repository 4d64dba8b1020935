"""Run identity of the train stage: a changed input (label table content, an image rewritten at the same size)
trains again and says why; label provenance is checked; a training killed with SIGKILL resumes in the same run
and ends with the weights of an uninterrupted one."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

import visreps.stages.train as train_stage
from tests.conftest import REPO, rewrite_at_same_size, stage_environment
from visreps.config import to_yaml
from visreps.data.images import scan_class_folders
from visreps.models import load_file
from visreps.tracking import load_model, stage_run
from visreps.training import TrainingError

from .conftest import tiny_config, write_tiny_tree


def _write_table(path: Path, root: Path, flip: bool = False) -> Path:
    """A K=2 table over the images of ``root`` (classes 0,1 -> 0 and 2,3 -> 1; swapped with ``flip``), no attrs."""
    collection = scan_class_folders(root)
    labels = collection.fine_labels // 2
    pd.DataFrame({"image": collection.keys, "label": 1 - labels if flip else labels}).to_parquet(path, index=False)
    return path


@pytest.mark.slow
def test_a_rewritten_label_table_trains_again_and_moves_the_alias(store, tiny_tree: Path, tmp_path: Path,
                                                                   capsys) -> None:
    table = _write_table(tmp_path / "k2.parquet", tiny_tree)
    config = tiny_config(tiny_tree, epochs=1, labels__table=str(table), labels__source_name="mytable")
    first = train_stage.run_train_stage(config)
    _write_table(table, tiny_tree, flip=True)  # same path, same configuration, every label changed
    capsys.readouterr()
    second = train_stage.run_train_stage(config)
    assert second != first
    assert f"train: labels.table changed since finished run {first} (same configuration); running again" \
        in capsys.readouterr().out
    assert load_model("models:/visreps-custom_cnn_small@k2-mytable-s1").metadata["run_id"] == second
    version = store.get_model_version_by_alias("visreps-custom_cnn_small", "k2-mytable-s1")
    assert version.source == f"runs:/{second}/model"
    assert train_stage.run_train_stage(config) == second
    assert f"train: re-using finished run {second}" in capsys.readouterr().out


@pytest.mark.slow
def test_an_image_rewritten_at_the_same_size_trains_again(store, tmp_path: Path, capsys) -> None:
    root = write_tiny_tree(tmp_path / "tree", per_class=8)
    config = tiny_config(root, epochs=1, seed=3)
    first = train_stage.run_train_stage(config)
    rewrite_at_same_size(root / "class_2" / "img_005.png")
    capsys.readouterr()
    second = train_stage.run_train_stage(config)
    assert second != first
    assert f"train: dataset.root changed since finished run {first}" in capsys.readouterr().out
    tags = store.get_run(second).data.tags
    assert tags["visreps.input.dataset.root"] != store.get_run(first).data.tags["visreps.input.dataset.root"]


def test_label_source_is_checked_against_the_labels_run(store, tiny_tree: Path, tmp_path: Path) -> None:
    table = pd.read_parquet(_write_table(tmp_path / "k2.parquet", tiny_tree))
    with stage_run("labels", tiny_config(tiny_tree), experiment="visreps-labels-fake",
                   tags={"visreps.label_source": "pca_alexnet"}) as labels_run:
        labels_run.log_table(table, "label_tables/k2.parquet")
    uri = f"runs:/{labels_run.run_id}/label_tables/k2.parquet"
    with pytest.raises(TrainingError, match="labels.source_name='pca_pixels' disagrees with .* 'pca_alexnet'"):
        train_stage.run_train_stage(tiny_config(tiny_tree, epochs=1, labels__table=uri,
                                                labels__source_name="pca_pixels"))
    run_id = train_stage.run_train_stage(tiny_config(tiny_tree, epochs=1, labels__table=uri))
    assert store.get_run(run_id).data.tags["visreps.label_source"] == "pca_alexnet"
    assert load_model("models:/visreps-custom_cnn_small@k2-pca_alexnet-s1").metadata["run_id"] == run_id


def _train_process(config_file: Path, home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "visreps.cli", "train", "--config", str(config_file)],
                            cwd=REPO, env=stage_environment(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _final_weights(home: Path, run_id: str, folder: Path) -> dict[str, torch.Tensor]:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return load_file(client.download_artifacts(run_id, "model/model.pt", str(folder))).model.state_dict()


@pytest.mark.slow
def test_sigkilled_training_resumes_in_the_same_run_with_identical_weights(tmp_path: Path) -> None:
    root = write_tiny_tree(tmp_path / "tree")
    config_file = tmp_path / "train.yaml"
    config_file.write_text(to_yaml(tiny_config(root, epochs=12, experiment="visreps-sigkill")))
    killed_home, reference_home = tmp_path / "killed", tmp_path / "reference"
    process = _train_process(config_file, killed_home)
    deadline = time.monotonic() + 240
    while not list((killed_home / "checkpoints" / "train").glob("*/epoch_001.pt")):
        assert process.poll() is None, f"training ended before its first checkpoint: {process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    client = MlflowClient(f"sqlite:///{killed_home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("visreps-sigkill").experiment_id
    (orphan,) = client.search_runs([experiment])
    assert orphan.info.status == "RUNNING" and orphan.data.tags["visreps.complete"] == "false"

    resumed = subprocess.run([sys.executable, "-m", "visreps.cli", "train", "--config", str(config_file)],
                             cwd=REPO, env=stage_environment(killed_home), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "train: resuming from checkpoint " in resumed.stdout
    assert f"continuing run {orphan.info.run_id}" in resumed.stdout
    runs = client.search_runs([experiment], filter_string=f"tags.`visreps.run_key` = "
                                                          f"'{orphan.data.tags['visreps.run_key']}'")
    assert [(run.info.run_id, run.info.status) for run in runs] == [(orphan.info.run_id, "FINISHED")]
    assert runs[0].data.tags["visreps.complete"] == "true" and "visreps.continued_after_pid" in runs[0].data.tags
    steps = {metric.step for metric in client.get_metric_history(orphan.info.run_id, "heldout_accuracy")}
    assert steps == set(range(13))

    reference = _train_process(config_file, reference_home)
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    reference_run = out.strip().splitlines()[-1].split()[-1]
    ours = _final_weights(killed_home, orphan.info.run_id, tmp_path / "a")
    theirs = _final_weights(reference_home, reference_run, tmp_path / "b")
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), f"{name} differs after resuming"
    shutil.rmtree(tmp_path / "tree")
