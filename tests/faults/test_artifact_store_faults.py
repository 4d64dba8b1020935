"""The embedded store's artifact folder fills up, or turns read-only, while a training logs to it (a real small
tmpfs mounted there; without root a read-only folder is made with chmod and the full disk is skipped). The
command ends with exit status 2 and one line naming the artifact, the store and the fix; the run is FAILED
with the reason in ``visreps.error`` and never marked complete."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.training.conftest import tiny_config, write_tiny_tree
from visreps import cli
from visreps.config import to_yaml


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def _make_read_only(folder: Path, mounted: bool, timeout_s: float = 60) -> None:
    """Remount the tmpfs read-only (retried while an upload holds a file open), or chmod the tree a-w."""
    if not mounted:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        return
    deadline = time.monotonic() + timeout_s
    while subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "could not remount the artifact folder read-only"
        time.sleep(0.005)


def _train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, during=None) -> tuple[int, str, MlflowClient]:
    """`visreps train` (in this process) on a fresh home; ``during(home)`` runs in a thread meanwhile."""
    root = write_tiny_tree(tmp_path / "tree", per_class=8)
    config_file = tmp_path / "train.yaml"
    config_file.write_text(to_yaml(tiny_config(root, epochs=3, experiment="visreps-disk", register=False)))
    home = tmp_path / "home"
    monkeypatch.setenv("VISREPS_HOME", str(home))
    monkeypatch.setattr(sys, "argv", ["visreps", "train", "--config", str(config_file)])  # as typed in a shell
    thread = threading.Thread(target=during, args=(home,), daemon=True) if during else None
    capsys.readouterr()
    if thread:
        thread.start()
    status = cli.main(["train", "--config", str(config_file)])
    if thread:
        thread.join(timeout=60)
    return status, capsys.readouterr().err, MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def _check_failed_clearly(status: int, err: str, client: MlflowClient, reason: str) -> None:
    assert status == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("visreps train: error: cannot store artifact ") and reason in line, line
    assert "mlartifacts" in line and "rerun `visreps train --config" in line
    experiment = client.get_experiment_by_name("visreps-disk").experiment_id
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FAILED" and run.data.tags["visreps.complete"] == "false"
    assert reason in run.data.tags["visreps.error"]


@pytest.mark.slow
def test_a_full_artifact_disk_fails_the_run_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    artifacts = tmp_path / "home" / "mlartifacts"
    if not _mount_tmpfs(artifacts, "1m"):  # config.yaml fits; the first checkpoint (several MB) does not
        pytest.skip("filling a disk for real needs a small tmpfs, which only root with CAP_SYS_ADMIN can mount")
    try:
        status, err, client = _train(tmp_path, monkeypatch, capsys)
    finally:
        subprocess.run(["umount", "-l", str(artifacts)], check=True)
    _check_failed_clearly(status, err, client, "No space left on device")


@pytest.mark.slow
def test_an_artifact_folder_turning_read_only_fails_the_run_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys) -> None:
    artifacts = tmp_path / "home" / "mlartifacts"
    mounted = _mount_tmpfs(artifacts, "64m")
    if not mounted and os.geteuid() == 0:
        pytest.skip("root ignores chmod and cannot mount a tmpfs here: no way to make a folder read-only for real")

    def turn_read_only(home: Path) -> None:
        deadline = time.monotonic() + 240
        while not list((home / "checkpoints" / "train").glob("*/epoch_001.pt")) and time.monotonic() < deadline:
            time.sleep(0.005)
        _make_read_only(artifacts, mounted)

    try:
        status, err, client = _train(tmp_path, monkeypatch, capsys, during=turn_read_only)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(artifacts)], check=True)
    _check_failed_clearly(status, err, client, "Read-only file system" if mounted else "Permission denied")
