"""A real sweep: `visreps sweep` with 2 worker processes on the local PostgreSQL (Optuna storage) and a real
`mlflow server`, training the demo network on a small demo dataset; one worker is SIGKILLed mid-training. Every
grid point completes exactly once, the killed trial is failed by its stale heartbeat and retried (its MLflow
trial run continued, not duplicated), and the parent run holds the trials table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from visreps.data.demo import DemoDataConfig, generate_demo_dataset
from visreps.paths import project_root

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEMO = DemoDataConfig(n_train_images=384, image_size=32, n_subjects=1, n_train_stimuli_per_subject=30,
                      n_test_stimuli=16, n_voxels=6, n_images_per_concept=2, behaviour_dims=3)


def _postgres_available() -> bool:
    """Whether the server answers (a plain connection: creating Optuna's schema here would race between the
    test processes that collect this file at the same time, and skip the test on a fresh database)."""
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(POSTGRES).connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except Exception:
        return False
    return True


SWEEP = """
experiment: sweep-tests
study_name: {study}
storage: {storage}
train:
  config: configs/train/demo.yaml
  overrides: [dataset.root={images}, epochs=6, model.image_size=32, batch_size=32, device=cpu, progress=false,
              register=false, checkpoint_every=1]
label_sources:
  pca_pixels:
    config: configs/labels/demo_pixels.yaml
    overrides: [dataset.root={images}, "ks=[2,4]", compute.num_workers=0, compute.progress=false, n_pole_images=2]
evaluate:
  demo:
    config: configs/evaluate/demo.yaml
    overrides: [dataset_root={demo}, n_bootstrap=0, projection_dim=128, device=cpu, n_rsa_stimuli=30]
search_space:
  label_source: {{choices: [pca_pixels, fine, untrained]}}
  K: {{choices: [2, 4]}}
  seed: {{choices: [1]}}
objectives:
  - {{name: heldout_accuracy}}
  - {{name: selection_rsa, dataset: demo}}
workers: 2
heartbeat_interval: 1
grace_period: 4
"""


@pytest.mark.slow
@pytest.mark.skipif(not _postgres_available(), reason="PostgreSQL at 127.0.0.1:5432 (database test) is not running")
def test_two_workers_finish_the_grid_once_and_a_killed_trial_is_retried(mlflow_server: str, tmp_path: Path) -> None:
    root = generate_demo_dataset(DEMO, root=tmp_path / "demo", progress=False).root
    study = f"sweep-test-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(study=study, storage=POSTGRES, images=root / "train_images", demo=root))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "VISREPS_HOME": str(tmp_path / "home")}
    launcher = subprocess.Popen([sys.executable, "-m", "visreps.cli", "sweep", "--config", str(path)], env=env,
                                cwd=project_root(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(mlflow_server)
    killed = _kill_a_worker_mid_training(client, launcher)
    output, _ = launcher.communicate(timeout=420)
    assert launcher.returncode == 0, output
    assert "sweep plan: 4 trials, 3 trainings, 1 labels runs, 4 selection evaluations" in output

    trials = optuna.load_study(study_name=study, storage=POSTGRES).get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    keys = sorted(repr(sorted(t.params.items())) for t in complete)
    expected = [{"label_source": "pca_pixels", "K": 2, "seed": 1}, {"label_source": "pca_pixels", "K": 4, "seed": 1},
                {"label_source": "fine", "seed": 1}, {"label_source": "untrained", "seed": 1}]
    assert keys == sorted(repr(sorted(p.items())) for p in expected), "every grid point completed exactly once"
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed, "the killed worker's trial is failed by its stale heartbeat"
    retried = [optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in complete]
    assert {t.number for t in failed} <= set(retried), "and retried"
    assert all(len(t.values) == 2 for t in complete)

    experiment = client.get_experiment_by_name("sweep-tests")
    runs = client.search_runs([experiment.experiment_id], f"tags.`visreps.study` = '{study}'")
    trial_runs = [r for r in runs if r.data.tags.get("visreps.stage") == "sweep.trial"]
    finished = [r for r in trial_runs if r.info.status == "FINISHED"]
    assert len(finished) == 4 and not [r for r in trial_runs if r.info.status == "RUNNING"]
    continued = [r for r in finished if "visreps.continued_after_pid" in r.data.tags]
    assert any(r.data.tags["visreps.continued_after_pid"] == str(killed) for r in continued), \
        "the retried trial continued the killed worker's run"
    for run in finished:
        train = client.get_run(run.data.tags["visreps.train_run_id"])
        assert train.data.tags["visreps.sweep_trial_run_id"] in {r.info.run_id for r in finished}
    parent = [r for r in runs if r.data.tags.get("visreps.stage") == "sweep"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    table = pd.read_csv(client.download_artifacts(parent[0].info.run_id, "trials.csv", str(tmp_path)))
    assert (table.state == "COMPLETE").sum() == 4 and "selection_rsa.demo" in table
    _check_dashboard_sweep_view(mlflow_server, parent[0].info.run_id, table)

    before = {r.info.run_id for r in client.search_runs([experiment.experiment_id], "", max_results=1000)}
    rerun = subprocess.run([sys.executable, "-m", "visreps.cli", "sweep", "--config", str(path)], env=env,
                           cwd=project_root(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and f"sweep: run {parent[0].info.run_id}" in rerun.stdout, rerun.stdout + rerun.stderr
    after = {r.info.run_id for r in client.search_runs([experiment.experiment_id], "", max_results=1000)}
    assert after == before, "a rerun of the finished grid re-uses every run"


def _check_dashboard_sweep_view(server: str, sweep_run: str, trials: pd.DataFrame) -> None:
    """The dashboard's sweep view of this study: the history holds every complete trial's value."""
    sys.path.insert(0, str(project_root() / "dashboards"))
    import app as dashboard

    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", server)
    try:
        results = dashboard.Results()
        results.refresh()
        assert sweep_run in set(results.sweeps.run_id)
        graphs, _ = dashboard.draw_view(results, "sweeps", None, "raw", [], sweep_id=sweep_run)
    finally:
        patch.undo()
    history = {graph.id: graph.figure for graph in graphs}["history-0"]
    objective = history.layout.yaxis.title.text
    assert sorted(history.data[0].y) == pytest.approx(sorted(trials[trials.state == "COMPLETE"][objective].dropna()))


def _kill_a_worker_mid_training(client: MlflowClient, launcher: subprocess.Popen, timeout_s: float = 240.0) -> int:
    """SIGKILL the worker process of the first training run that has logged an epoch; returns its pid."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert launcher.poll() is None, launcher.stdout.read()
        experiment = client.get_experiment_by_name("sweep-tests")
        if experiment is not None:
            for run in client.search_runs([experiment.experiment_id], "tags.`visreps.stage` = 'train'"):
                if run.info.status == "RUNNING" and "train_loss" in run.data.metrics:
                    pid = int(run.data.tags["visreps.pid"])
                    os.kill(pid, signal.SIGKILL)
                    return pid
        time.sleep(0.3)
    raise AssertionError("no training run started within the time limit")
