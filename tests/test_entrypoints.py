"""The stage entry points as users run them: a subprocess against a real `mlflow server`, `mlflow run`, and bad
input ending in one clear line on stderr with exit status 2 before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO, free_port, stage_environment

pytestmark = pytest.mark.slow  # every test here runs the CLI or `mlflow run` in subprocesses

#: a demo dataset small enough to generate in a few seconds
TINY_DEMO = ("n_train_images=64 image_size=32 n_subjects=1 n_train_stimuli_per_subject=16 n_test_stimuli=16 "
             "n_voxels=4 n_images_per_concept=1 behaviour_dims=3")


def _demo_runs(client: MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string="tags.`visreps.stage` = 'demo_data'")


def _check_demo_run(client: MlflowClient, run) -> None:
    assert run.info.status == "FINISHED"
    assert run.data.tags["visreps.complete"] == "true"
    assert len(run.data.tags["visreps.config_hash"]) == 16
    assert run.data.params["n_train_images"] == "64"
    ceilings = {key: value for key, value in run.data.metrics.items() if key.startswith("noise_ceiling.")}
    assert set(ceilings) == {"noise_ceiling.sub-01.early", "noise_ceiling.sub-01.ventral"}
    assert all(-1.0 <= value <= 1.0 for value in ceilings.values())
    figures = {item.path for item in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == {"figures/sample_images.png", "figures/noise_ceilings.png"}
    top = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "generator.json", "summary.json"} <= top


def test_entry_point_against_real_server(mlflow_server: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "entrypoints/demo_data.py", "--config", "", "--overrides", TINY_DEMO, "seed=5"],
        cwd=REPO, env=stage_environment(tmp_path, mlflow_server), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    runs = [run for run in _demo_runs(client) if run.data.params.get("seed") == "5"]
    assert len(runs) == 1
    _check_demo_run(client, runs[0])
    assert not (tmp_path / "mlflow.db").exists(), "the embedded store must not be used when a server is set"


def _mlflow_run(entry_point: str, overrides: str, folder: Path) -> MlflowClient:
    """`mlflow run <repo> -e ENTRY --env-manager local -P overrides=...` into a SQLite store in ``folder``."""
    store = f"sqlite:///{folder / 'mlflow.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry_point, "--env-manager", "local",
         "-P", f"overrides={overrides}"],
        cwd=folder, env=stage_environment(folder / "home", store), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return MlflowClient(store)


def test_mlflow_run_entry_point(tmp_path: Path) -> None:
    client = _mlflow_run("demo_data", f"{TINY_DEMO} seed=6", tmp_path)
    runs = _demo_runs(client)
    assert len(runs) == 1, "the stage must continue the run `mlflow run` created, not open a second one"
    assert runs[0].data.params["seed"] == "6"
    assert runs[0].data.tags.get("mlflow.project.entryPoint") == "demo_data"
    _check_demo_run(client, runs[0])


def test_mlflow_run_labels_entry_point(tmp_path: Path) -> None:
    from tests.labels.conftest import write_image_tree

    images = write_image_tree(tmp_path / "images")
    client = _mlflow_run("labels", f"dataset.root={images} ks=[2,4] compute.num_workers=0 compute.progress=false "
                                   "source.pixel_size=4 figures=false", tmp_path)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, filter_string="tags.`visreps.stage` = 'labels'")
    assert run.info.status == "FINISHED" and run.data.tags["visreps.complete"] == "true"
    assert run.data.params["ks"] == "[2, 4]"
    tables = {item.path for item in client.list_artifacts(run.info.run_id, "label_tables")}
    assert {"label_tables/k2.parquet", "label_tables/k4.parquet"} <= tables


def _visreps(args: list[str], home: Path, tracking_uri: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visreps.cli", *args], cwd=REPO, env=stage_environment(home, tracking_uri),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "fragments"), [
    (["demo_data", "n_train_imagez=10"], ["n_train_imagez"]),
    (["demo_data", "n_subjects=two"], ["n_subjects", "command-line"]),
    (["train", "--config", "configs/train/missing.yaml"], ["missing.yaml", "does not exist"]),
    (["pipeline", "train.overrides=[epochz=1]"], ["epochz"]),
    (["pipeline", "ks=[3]"], ["power"]),
    (["pipeline", "fine_model_source=nope"], ["nope", "label_sources"]),
])
def test_bad_configuration_is_one_line_and_exit_2(args: list[str], fragments: list[str], tmp_path: Path) -> None:
    result = _visreps(args, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"visreps {args[0]}: error:"), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0]
    assert not (tmp_path / "data").exists(), "nothing may be generated before the configuration is valid"


def test_unreachable_server_stops_before_any_work(tmp_path: Path) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    result = _visreps(["demo_data", *TINY_DEMO.split()], tmp_path, tracking_uri=address)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "MLFLOW_TRACKING_URI" in lines[0], result.stderr
    assert not (tmp_path / "data").exists()


def test_unwritable_home_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _visreps(["demo_data", *TINY_DEMO.split()], blocker / "home")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(blocker) in lines[0], result.stderr


def test_mlflow_run_train_logs_into_the_configured_experiment(tmp_path: Path) -> None:
    from tests.training.conftest import write_tiny_tree

    images = write_tiny_tree(tmp_path / "images", per_class=8)
    overrides = (f"dataset.root={images} model.architecture=custom_cnn_small model.image_size=32 epochs=1 "
                 "batch_size=16 num_workers=0 device=cpu progress=false experiment=visreps-train-elsewhere")
    client = _mlflow_run("train", overrides, tmp_path)
    experiment = client.get_experiment_by_name("visreps-train-elsewhere")
    assert experiment is not None, "an experiment= override must be honoured under `mlflow run`"
    (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.`visreps.stage` = 'train'")
    assert run.info.status == "FINISHED" and run.data.tags["visreps.complete"] == "true"
    assert run.data.tags["mlflow.project.entryPoint"] == "train"
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri()), "artifacts beside the database"
    (launcher,) = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    assert launcher.data.tags["visreps.stage_run_id"] == run.info.run_id
    assert run.data.tags["visreps.launcher_run_id"] == launcher.info.run_id

    _mlflow_run("train", overrides, tmp_path)  # the same again: re-used, and the new launcher run says so
    assert len(client.search_runs([experiment.experiment_id])) == 1
    launchers = client.search_runs([client.get_experiment_by_name("Default").experiment_id],
                                   order_by=["attributes.start_time DESC"])
    assert len(launchers) == 2 and launchers[0].data.tags["visreps.reused_run_id"] == run.info.run_id
