"""DDP on CPU: the train stage launched by torchrun as two gloo processes trains one epoch; both ranks end with
identical weights and metrics, rank 0 alone logs and registers, and every rank returns the same run id."""

from __future__ import annotations

import pytest

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch

from .conftest import tiny_config

WORKER = '''
import json, os, sys
from pathlib import Path
import torch
import visreps.stages.train as stage
from visreps.training import TrainConfig, Trainer

config = TrainConfig.model_validate(json.loads(sys.argv[1]))
out = Path(sys.argv[2])


class RecordingTrainer(Trainer):
    """The stage's trainer, also saving what each rank ends with."""

    def fit(self, resume=True):
        result = super().fit(resume)
        torch.save(result.model.state_dict(), out / f"rank{self.context.rank}.pt")
        (out / f"history{self.context.rank}.json").write_text(json.dumps(result.history))
        return result


stage.Trainer = RecordingTrainer
run_id = stage.run_train_stage(config)
(out / f"run{os.environ['RANK']}.txt").write_text(run_id)
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_torchrun(arguments: list[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    """torchrun in its own process group, killed whole (launcher and ranks) if it overruns."""
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *arguments], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_two_gloo_ranks_end_identical(tiny_tree: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_tree, epochs=1, batch_size=16, deterministic=False)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VISREPS_HOME": str(tmp_path / "home")}
    completed = _run_torchrun(
        ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         str(script), config.model_dump_json(), str(tmp_path)],
        env, timeout_s=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key  # parameters and BatchNorm buffers
    timing = {"epoch_seconds", "images_per_second"}
    histories = [[{k: v for k, v in entry.items() if k not in timing}
                  for entry in json.loads((tmp_path / f"history{rank}.json").read_text())] for rank in (0, 1)]
    assert histories[0] == histories[1]  # losses and accuracies are all-reduced: every rank reports the same
    run_ids = {(tmp_path / f"run{rank}.txt").read_text() for rank in (0, 1)}  # rank files: the group was up
    assert len(run_ids) == 1
    from mlflow import MlflowClient

    store = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    run = store.get_run(run_ids.pop())
    assert run.data.tags["visreps.world_size"] == "2" and run.data.tags["visreps.complete"] == "true"
    assert len(store.search_runs([run.info.experiment_id])) == 1  # rank 1 logged nothing
    artifacts = {item.path for item in store.list_artifacts(run.info.run_id, "checkpoints")}
    assert artifacts == {"checkpoints/epoch_000.pt", "checkpoints/epoch_001.pt"}
    initial = torch.load(store.download_artifacts(run.info.run_id, "checkpoints/epoch_000.pt", str(tmp_path)),
                         weights_only=True)["model"]
    assert not torch.equal(initial["conv1.conv.weight"], first["conv1.conv.weight"])  # it did train
