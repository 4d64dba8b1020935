"""The evaluate stage as users run it: SIGKILLed mid-way and relaunched (finished pairs are kept, nothing is
redone twice, one complete result in the end), and `mlflow run . -e evaluate` against a real `mlflow server`
(a rerun creates no second result)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from tests.conftest import REPO, stage_environment
from visreps.data.demo import DemoDataConfig, generate_demo_dataset
from visreps.models import create_model, save_model_file

DEMO = DemoDataConfig(n_train_images=64, image_size=32, n_subjects=4, n_train_stimuli_per_subject=40,
                      n_test_stimuli=24, n_voxels=12, n_images_per_concept=2, behaviour_dims=4)
SETTINGS = ["n_bootstrap=200", "n_rsa_stimuli=30", "progress=false", "device=cpu", "batch_size=16",
            "projection_dim=256", "analysis=both", "experiment=visreps-evaluate-tests"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("evaluate_inputs")
    demo = generate_demo_dataset(DEMO, root=folder / "demo", progress=False).root
    torch.manual_seed(5)
    model = save_model_file(folder / "model.pt", create_model("custom_cnn_small", 4),
                            {"architecture": "custom_cnn_small", "num_classes": 4, "image_size": 32})
    return demo, model


def _runs(client: MlflowClient, stage: str) -> list:
    experiment = client.get_experiment_by_name("visreps-evaluate-tests")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`visreps.stage` = '{stage}'")


@pytest.mark.slow
def test_a_killed_evaluation_keeps_its_finished_pairs(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    demo, model = inputs
    home = tmp_path / "home"
    home.mkdir()
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # the tables exist before the subprocess starts, so no two processes migrate the database at once
    SqlAlchemyStore(f"sqlite:///{home / 'mlflow.db'}", str(home / "mlartifacts"))
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    command = [sys.executable, "-m", "visreps.cli", "evaluate", f"model={model}", f"dataset_root={demo}", *SETTINGS]
    process = subprocess.Popen(command, cwd=REPO, env=stage_environment(home), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    finished = []
    while not finished:
        assert process.poll() is None, f"the evaluation ended before a pair finished: {process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no finished pair after 240 s"
        time.sleep(0.1)
        finished = [run for run in _runs(client, "evaluate.pair") if run.info.status == "FINISHED"]
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    kept = {run.info.run_id for run in _runs(client, "evaluate.pair") if run.info.status == "FINISHED"}
    (orphan,) = [run.info.run_id for run in _runs(client, "evaluate") if run.info.status == "RUNNING"]

    again = subprocess.run(command, cwd=REPO, env=stage_environment(home), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    for run_id in kept:
        assert f"evaluate.pair: re-using finished run {run_id}" in again.stdout
    parents = _runs(client, "evaluate")
    complete = [run for run in parents if run.data.tags.get("visreps.complete") == "true"]
    assert sorted(run.data.tags["visreps.analysis"] for run in complete) == ["encoding", "rsa"]
    assert orphan in {run.info.run_id for run in complete}, "the killed parent run is continued, not left RUNNING"
    assert not [run for run in parents + _runs(client, "evaluate.pair") if run.info.status == "RUNNING"]
    pairs = [run for run in _runs(client, "evaluate.pair") if run.data.tags.get("visreps.complete") == "true"]
    assert len(pairs) == 16 and kept <= {run.info.run_id for run in pairs}


@pytest.mark.slow
def test_mlflow_run_evaluate_against_a_real_server(inputs: tuple[Path, Path], mlflow_server: str,
                                                  tmp_path: Path) -> None:
    demo, model = inputs

    def mlflow_run() -> None:
        result = subprocess.run(
            [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "evaluate", "--env-manager", "local",
             "-P", f"model={model}", "-P", "dataset=demo", "-P", "analysis=rsa",
             "-P", "overrides=" + " ".join([f"dataset_root={demo}", "subjects=[sub-01]", *SETTINGS[:-2],
                                           "experiment=visreps-evaluate-tests"])],
            cwd=tmp_path, env=stage_environment(tmp_path / "home", mlflow_server), capture_output=True, text=True,
            timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    mlflow_run()
    client = MlflowClient(mlflow_server)
    (parent,) = _runs(client, "evaluate")
    assert parent.data.tags["visreps.complete"] == "true" and parent.data.tags["visreps.analysis"] == "rsa"
    assert parent.data.tags["mlflow.project.entryPoint"] == "evaluate"
    assert len(_runs(client, "evaluate.pair")) == 2
    mlflow_run()
    assert [run.info.run_id for run in _runs(client, "evaluate")] == [parent.info.run_id]
    assert len(_runs(client, "evaluate.pair")) == 2
    assert not (tmp_path / "home" / "mlflow.db").exists(), "the server, not the embedded store, holds the runs"
