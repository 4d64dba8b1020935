"""Tracking: the embedded store, a real `mlflow server`, reuse of finished runs, orphaned and live runs of real
processes, unreachable servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO
from visreps.config import ConfigModel, config_hash, runtime_field
from visreps.tracking import (
    COMPLETE_TAG,
    TrackingError,
    embedded_paths,
    ensure_tracking_available,
    find_finished_run,
    stage_run,
    tracking_uri,
)


class ToyConfig(ConfigModel):
    seed: int = 1
    lr: float = 1e-3
    experiment: str = runtime_field("visreps-tests")


def test_embedded_store_lives_in_visreps_home(isolated_visreps_home: Path) -> None:
    uri = ensure_tracking_available()
    database, artifacts = embedded_paths()
    assert uri == f"sqlite:///{database}"
    assert database.parent == isolated_visreps_home
    assert database.is_file() and artifacts.is_dir()


def test_stage_run_logs_config_tags_and_reuse() -> None:
    config = ToyConfig(seed=11)
    assert find_finished_run("toy", config) is None
    with stage_run("toy", config, tags={"visreps.dataset": "none"}) as run:
        run.log_metrics({"loss": 0.5}, step=1)
        run.log_metrics({"loss": 0.25}, step=2)
    found = find_finished_run("toy", config)
    assert found is not None and found.run_id == run.run_id
    assert found.tags["visreps.stage"] == "toy"
    assert found.tags["visreps.config_hash"] == config_hash(config)
    assert found.tags[COMPLETE_TAG] == "true"
    assert "visreps.git_commit" in found.tags
    assert found.params["seed"] == "11" and float(found.params["lr"]) == pytest.approx(1e-3)
    client = MlflowClient(tracking_uri())
    history = client.get_metric_history(run.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25)]
    local = client.download_artifacts(run.run_id, "config.yaml")
    assert "seed: 11" in Path(local).read_text()
    # a config differing only in a field that does not affect results reuses the run
    assert find_finished_run("toy", ToyConfig(seed=11, experiment="elsewhere")).run_id == run.run_id
    # another stage version or config does not
    assert find_finished_run("toy", config, stage_version=2) is None
    assert find_finished_run("toy", ToyConfig(seed=12)) is None


def test_failed_stage_is_never_reused() -> None:
    config = ToyConfig(seed=21)
    with pytest.raises(RuntimeError, match="boom"):
        with stage_run("toy", config) as run:
            raise RuntimeError("boom")
    client = MlflowClient(tracking_uri())
    failed = client.get_run(run.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags[COMPLETE_TAG] == "false"
    assert "boom" in failed.data.tags["visreps.error"]
    assert find_finished_run("toy", config) is None


def test_non_finite_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="not finite"):
        with stage_run("toy", ToyConfig(seed=31)) as run:
            run.log_metrics({"score": float("nan")})


def test_unreachable_server_fails_fast_with_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    with pytest.raises(TrackingError) as caught:
        ensure_tracking_available(timeout_s=2)
    message = str(caught.value)
    assert url in message and "unreachable" in message and "MLFLOW_TRACKING_URI" in message


def test_file_store_uri_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "mlruns"))
    with pytest.raises(TrackingError, match="file store"):
        ensure_tracking_available()


def test_unwritable_home_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VISREPS_HOME", str(blocker / "home"))
    with pytest.raises(Exception) as caught:
        ensure_tracking_available()
    assert str(blocker) in str(caught.value)


@pytest.mark.slow
def test_stage_run_against_real_server(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert ensure_tracking_available() == mlflow_server
    config = ToyConfig(seed=41)
    with stage_run("toy", config) as run:
        run.log_metrics({"score": 0.75})
        run.log_dict({"a": 1}, "summary.json")
    client = MlflowClient(mlflow_server)
    fetched = client.get_run(run.run_id)
    assert fetched.info.status == "FINISHED"
    assert fetched.data.metrics["score"] == 0.75
    artifacts = {item.path for item in client.list_artifacts(run.run_id)}
    assert {"config.yaml", "summary.json"} <= artifacts
    assert find_finished_run("toy", config).run_id == run.run_id
    assert os.environ.get("MLFLOW_RUN_ID") is None


def _stage_run_process(seed: int, then: str) -> tuple[subprocess.Popen, str]:
    """A real process that opens the toy stage run of ``seed`` and then SIGKILLs itself or waits on stdin."""
    script = (
        "import os, signal, sys\n"
        "from tests.tracking.test_runs import ToyConfig\n"
        "from visreps.tracking import stage_run\n"
        f"with stage_run('toy', ToyConfig(seed={seed})) as run:\n"
        "    print(run.run_id, flush=True)\n"
        f"    os.kill(os.getpid(), signal.SIGKILL) if {then == 'kill'!r} else sys.stdin.readline()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = process.stdout.readline().strip()
    assert run_id, process.stderr.read()[-3000:]
    return process, run_id


@pytest.mark.slow
def test_run_left_running_by_sigkill_is_ended_by_the_next_run_of_its_key() -> None:
    process, orphan = _stage_run_process(41, "kill")
    assert process.wait(timeout=60) == -signal.SIGKILL
    client = MlflowClient(tracking_uri())
    assert client.get_run(orphan).info.status == "RUNNING"  # what SIGKILL leaves behind
    with stage_run("toy", ToyConfig(seed=41)) as run:
        pass
    ended = client.get_run(orphan)
    assert ended.info.status == "KILLED" and ended.data.tags["visreps.superseded_by"] == run.run_id
    assert find_finished_run("toy", ToyConfig(seed=41)).run_id == run.run_id


@pytest.mark.slow
def test_a_live_run_of_the_same_key_is_refused_until_its_process_dies() -> None:
    process, live = _stage_run_process(42, "wait")
    try:
        with pytest.raises(TrackingError, match=f"run {live} with the same configuration and inputs is in progress"):
            with stage_run("toy", ToyConfig(seed=42)):
                pass
        with stage_run("toy", ToyConfig(seed=43)):  # another key is not blocked
            pass
    finally:
        process.kill()
        process.wait(timeout=60)
    with stage_run("toy", ToyConfig(seed=42)) as run:
        pass
    assert MlflowClient(tracking_uri()).get_run(live).data.tags["visreps.superseded_by"] == run.run_id
