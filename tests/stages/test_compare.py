"""`visreps compare` against a real `mlflow server`: evaluations of a fine-label, a coarse and an untrained network
on a small demo dataset, compared; the logged table equals the statistics of the runs' own tables; bad
selections are refused with one clear error naming the runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from visreps.cli import main
from visreps.config import load_config
from visreps.data.demo import DemoDataConfig, generate_demo_dataset
from visreps.models import create_model, save_model_file
from visreps.stages.compare import CompareConfig, load_evaluations, run_compare_stage, select_runs
from visreps.stages.compare_statistics import ComparisonError, compare_conditions
from visreps.stages.evaluate import EvaluateConfig, run_evaluate_stage
from visreps.tracking import download_artifacts, finished_run

DEMO = DemoDataConfig(n_train_images=64, image_size=32, n_subjects=2, n_train_stimuli_per_subject=40,
                      n_test_stimuli=30, n_voxels=12, n_images_per_concept=2, behaviour_dims=4)
MODELS = {"fine": {"K": 8, "label_source": "fine", "epoch": 3}, "coarse": {"K": 2, "label_source": "pca_pixels", "epoch": 3},
          "untrained": {"K": 8, "label_source": "fine", "epoch": 0}}


@pytest.fixture(scope="module")
def evaluations(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    root = generate_demo_dataset(DEMO, root=tmp_path_factory.mktemp("demo") / "demo", progress=False).root
    runs = {}
    for index, (name, provenance) in enumerate(MODELS.items()):
        torch.manual_seed(index)
        path = tmp_path_factory.mktemp(name) / "model.pt"
        save_model_file(path, create_model("custom_cnn_small", 4), {"architecture": "custom_cnn_small",
                                                                   "num_classes": 4, "image_size": 32, **provenance})
        config = load_config(EvaluateConfig, "evaluate", overrides=[
            f"model={path}", f"dataset_root={root}", "n_bootstrap=100", "n_rsa_stimuli=30", "progress=false",
            "device=cpu", "projection_dim=256", "experiment=compare-tests", "analysis=both" if name == "coarse" else "analysis=rsa"])
        runs.update({f"{name}-{analysis}": run_id for analysis, run_id in run_evaluate_stage(config).items()})
    yield runs
    patch.undo()


def _config(*overrides: str) -> CompareConfig:
    return load_config(CompareConfig, "compare", overrides=["source_experiment=compare-tests", "n_draws=200",
                                                           "experiment=compare-tests-out", *overrides])


def test_compare_logs_the_statistics_of_the_evaluations(evaluations: dict[str, str], capsys) -> None:
    assert main(["compare", "source_experiment=compare-tests", "filters.analysis=rsa",
                 "experiment=compare-tests-out", "n_draws=200"]) == 0
    printed = capsys.readouterr().out
    assert "smallest K not significantly below the reference" in printed
    run_id = printed.strip().splitlines()[-1].split()[-1]
    run = finished_run(run_id)
    assert run.tags["visreps.dataset"] == "demo" and run.tags["visreps.resampling"] == "stimuli"
    table = pd.read_parquet(download_artifacts(run_id, "comparison.parquet"))
    raw = table[table.measure == "raw"]
    assert set(raw.role) == {"reference", "condition", "untrained"} and set(raw.region) == {"early", "ventral"}
    config = _config("filters.analysis=rsa")
    expected = compare_conditions(load_evaluations(select_runs(config), config), n_draws=200)
    pd.testing.assert_frame_equal(table.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False)
    reference = raw[raw.role == "reference"]
    assert reference.condition.iloc[0] == "fine K=8 custom_cnn_small"
    tidy = pd.read_parquet(download_artifacts(evaluations["fine-rsa"], "results.parquet"))
    early = tidy[(tidy.region == "early") & (tidy.metric == "score")].value.mean()
    assert reference[reference.region == "early"]["mean"].iloc[0] == pytest.approx(early)
    assert {"figures/coarseness_raw.html"} <= {a.path for a in _artifacts(run_id, "figures")}
    assert run_compare_stage(config) == run_id, "the same comparison of the same runs is re-used"


def _artifacts(run_id: str, path: str):
    from visreps.tracking import client

    return client().list_artifacts(run_id, path)


@pytest.mark.parametrize(("overrides", "fragment"), [
    ([], "more than one analysis"),
    (["filters.analysis=rsa", "filters.label_source=nowhere"], "no complete evaluation run"),
    (["filters.analysis=rsa", "reference.label_source=nowhere"], "no evaluation matches the reference"),
])
def test_bad_selections_are_refused_naming_the_runs(evaluations: dict[str, str], overrides, fragment, capsys) -> None:
    status = main(["compare", "source_experiment=compare-tests", "experiment=compare-tests-out", *overrides])
    captured = capsys.readouterr()
    assert status != 0 and fragment in captured.err and "Traceback" not in captured.err
    if fragment.startswith("more"):
        assert evaluations["coarse-encoding"] in captured.err or evaluations["coarse-rsa"] in captured.err
    with pytest.raises(ComparisonError):
        run_compare_stage(_config(*overrides))
