"""Two real processes start the same stage at the same moment: two evaluations of one model on one dataset leave
one result, two trainings of one configuration one run and one intact checkpoint folder. The second process either
re-uses the first one's finished run or refuses with one clear line (the same work never runs twice)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from tests.conftest import REPO, stage_environment
from tests.evaluate.test_processes import DEMO
from tests.training.conftest import tiny_config, write_tiny_tree
from visreps.config import to_yaml
from visreps.data.demo import generate_demo_dataset
from visreps.models import create_model, save_model_file
from visreps.training.checkpoints import list_checkpoints, load_checkpoint

IN_PROGRESS = "with the same configuration and inputs is in progress"


def _home(tmp_path: Path) -> tuple[Path, MlflowClient]:
    """A visreps home whose embedded store's tables exist (so two processes never create them at once)."""
    home = tmp_path / "home"
    home.mkdir()
    SqlAlchemyStore(f"sqlite:///{home / 'mlflow.db'}", str(home / "mlartifacts"))
    return home, MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def _at_once(command: list[str], home: Path) -> list[subprocess.CompletedProcess]:
    """Start ``command`` twice at the same moment; both results, in start order."""
    processes = [subprocess.Popen(command, cwd=REPO, env=stage_environment(home), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return results


def _check_one_did_the_work(results: list[subprocess.CompletedProcess], stage: str) -> None:
    """One process ran the stage; the other re-used its result or refused in one line (no traceback)."""
    for result in results:
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
    worked = [r for r in results if r.returncode == 0 and "re-using finished run" not in r.stdout]
    assert len(worked) == 1, [(r.returncode, r.stdout[-500:], r.stderr[-1500:]) for r in results]
    (other,) = [r for r in results if r is not worked[0]]
    if other.returncode == 0:
        assert f"{stage}: re-using finished run" in other.stdout
    else:
        assert other.returncode == 2 and IN_PROGRESS in other.stderr, other.stderr[-3000:]
        assert other.stderr.strip().count("\n") == 0, f"more than one line on stderr: {other.stderr}"


@pytest.mark.slow
def test_of_three_processes_opening_one_stage_run_at_the_same_instant_one_runs(tmp_path: Path) -> None:
    """The narrowest race: three processes, imports done, are released by one byte on stdin at the same moment and
    open the same run (the host-wide claim lock makes the check for a live run and the opening of one one step)."""
    home, client = _home(tmp_path)
    script = ("import sys, time\nfrom tests.tracking.test_runs import ToyConfig\n"
              "from visreps.tracking import RunInProgress, stage_run\n"
              "print('ready', flush=True)\nsys.stdin.read(1)\n"
              "try:\n    with stage_run('toy', ToyConfig(seed=5), experiment='visreps-race') as run:\n"
              "        print('ran', run.run_id, flush=True)\n        time.sleep(1)\n"
              "except RunInProgress as error:\n    print('refused', error)\n")
    processes = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=stage_environment(home),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
    for process in processes:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()[-3000:]
    for process in processes:
        process.stdin.write("x")
        process.stdin.flush()
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * 3, [err[-2000:] for _, err in outputs]
    ran = [out.split()[1] for out, _ in outputs if out.startswith("ran ")]
    assert len(ran) == 1, [out for out, _ in outputs]
    assert sum(out.startswith("refused ") and IN_PROGRESS in out for out, _ in outputs) == 2
    experiment = client.get_experiment_by_name("visreps-race").experiment_id
    assert [run.info.run_id for run in client.search_runs([experiment])] == ran


@pytest.mark.slow
def test_two_evaluations_of_one_model_started_at_once_leave_one_result(tmp_path: Path) -> None:
    demo = generate_demo_dataset(DEMO, root=tmp_path / "demo", progress=False).root
    torch.manual_seed(7)
    model = save_model_file(tmp_path / "model.pt", create_model("custom_cnn_small", 4),
                            {"architecture": "custom_cnn_small", "num_classes": 4, "image_size": 32})
    home, client = _home(tmp_path)
    command = [sys.executable, "-m", "visreps.cli", "evaluate", f"model={model}", f"dataset_root={demo}",
               "analysis=rsa", "subjects=[sub-01]", "regions=[early]", "n_bootstrap=20", "n_rsa_stimuli=20", "progress=false",
               "device=cpu", "projection_dim=64", "experiment=visreps-concurrent"]
    _check_one_did_the_work(_at_once(command, home), "evaluate")
    experiment = client.get_experiment_by_name("visreps-concurrent").experiment_id
    parents = client.search_runs([experiment], filter_string="tags.`visreps.stage` = 'evaluate'")
    assert [(run.info.status, run.data.tags["visreps.complete"]) for run in parents] == [("FINISHED", "true")]
    pairs = client.search_runs([experiment], filter_string="tags.`visreps.stage` = 'evaluate.pair'")
    assert [(run.data.tags["visreps.subject"], run.data.tags["visreps.region"]) for run in pairs] == [("sub-01", "early")]
    assert {run.info.status for run in pairs} == {"FINISHED"}


@pytest.mark.slow
def test_two_trainings_of_one_configuration_started_at_once_share_nothing(tmp_path: Path) -> None:
    root = write_tiny_tree(tmp_path / "tree", per_class=16)
    config_file = tmp_path / "train.yaml"
    config_file.write_text(to_yaml(tiny_config(root, epochs=4, experiment="visreps-concurrent", register=False,
                                               log_checkpoints=False)))
    home, client = _home(tmp_path)
    command = [sys.executable, "-m", "visreps.cli", "train", "--config", str(config_file)]
    _check_one_did_the_work(_at_once(command, home), "train")
    experiment = client.get_experiment_by_name("visreps-concurrent").experiment_id
    (run,) = client.search_runs([experiment])
    assert (run.info.status, run.data.tags["visreps.complete"]) == ("FINISHED", "true")
    history = client.get_metric_history(run.info.run_id, "heldout_accuracy")
    assert sorted(metric.step for metric in history) == [0, 1, 2, 3, 4], "every epoch logged once, by one process"
    (folder,) = (home / "checkpoints" / "train").iterdir()
    assert folder.name == run.data.tags["visreps.run_key"]
    saved = list_checkpoints(folder)
    assert [epoch for epoch, _ in saved] == [0, 4]
    for epoch, path in saved:
        assert load_checkpoint(path)["epoch"] == epoch
