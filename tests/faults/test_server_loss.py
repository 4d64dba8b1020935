"""The `mlflow server` is stopped in the middle of two trainings and started again on the same port with the same
stores. The training whose client retries long enough (MLflow's retries, here with backoff factor 1) rides out the
outage and ends FINISHED and complete with every epoch logged once; the one allowed a single retry stops with one
line naming the server and the command to rerun and is left RUNNING and incomplete (what the next launch continues:
tests/training/test_run_identity.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO, free_port, stage_environment, stop_server, wait_for_health
from tests.training.conftest import tiny_config, write_tiny_tree
from visreps.config import to_yaml

EPOCHS = 10


def _server(folder: Path, port: int) -> subprocess.Popen:
    log = open(folder / "server.log", "a")
    return subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        start_new_session=True)


def _train(config_file: Path, home: Path, url: str, retries: int | None) -> subprocess.Popen:
    env = {**stage_environment(home, url), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    if retries is not None:
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    return subprocess.Popen([sys.executable, "-m", "visreps.cli", "train", "--config", str(config_file)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _config_file(folder: Path, root: Path, seed: int) -> Path:
    path = folder / f"train-s{seed}.yaml"
    path.write_text(to_yaml(tiny_config(root, epochs=EPOCHS, seed=seed, experiment="visreps-outage")))
    return path


def _trained_runs(home: Path) -> set[str]:
    """The run folders holding a checkpoint after at least one epoch (a folder keeps epoch_000.pt and only the
    newest one: epoch_001.pt is gone once epoch_002.pt is written)."""
    return {path.parent.name for path in (home / "checkpoints" / "train").glob("*/epoch_*.pt")
            if path.name != "epoch_000.pt"}


def _wait_for_first_checkpoints(home: Path, processes: list[subprocess.Popen], timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while len(_trained_runs(home)) < len(processes):
        for process in processes:
            assert process.poll() is None, f"a training ended before the server was stopped: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"no first checkpoints after {timeout_s:.0f} s"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_stopped_server_is_ridden_out_or_named_with_the_command_to_rerun(tmp_path: Path) -> None:
    root = write_tiny_tree(tmp_path / "tree", per_class=16)
    port, home = free_port(), tmp_path / "home"
    url = f"http://127.0.0.1:{port}"
    server = _server(tmp_path, port)
    try:
        wait_for_health(url, server)
        patient_file, hasty_file = _config_file(tmp_path, root, 1), _config_file(tmp_path, root, 2)
        patient = _train(patient_file, home, url, retries=9)  # backoffs 1, 2, 4, ... 120 s: about 6 minutes
        hasty = _train(hasty_file, home, url, retries=1)
        _wait_for_first_checkpoints(home, [patient, hasty])
        stop_server(server)
        server = _server(tmp_path, port)  # the same stores, the same port; up again in several seconds
        _, hasty_err = hasty.communicate(timeout=120)
        wait_for_health(url, server)
        out, err = patient.communicate(timeout=300)
        assert patient.returncode == 0 and "Traceback" not in err, err[-3000:]
        assert hasty.returncode == 2 and "Traceback" not in hasty_err, hasty_err[-3000:]
        (line,) = hasty_err.strip().splitlines()
        assert f"lost the MLflow tracking server at {url} during the train stage" in line
        assert f"rerun `visreps train --config {hasty_file}`" in line and "Nothing is marked complete" in line

        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("visreps-outage").experiment_id
        runs = {run.data.params["seed"]: run for run in client.search_runs([experiment])}
        assert sorted(runs) == ["1", "2"]
        ridden = runs["1"]
        assert (ridden.info.status, ridden.data.tags["visreps.complete"]) == ("FINISHED", "true")
        assert ridden.info.run_id == out.strip().splitlines()[-1].split()[-1]
        steps = sorted(m.step for m in client.get_metric_history(ridden.info.run_id, "heldout_accuracy"))
        assert steps == list(range(EPOCHS + 1)), "every epoch logged exactly once across the outage"
        assert {"model", "model_epoch0", "training_history.csv"} <= {a.path for a in client.list_artifacts(
            ridden.info.run_id)}
        lost = runs["2"]
        assert lost.info.status == "RUNNING" and lost.data.tags["visreps.complete"] == "false"
    finally:
        stop_server(server)
