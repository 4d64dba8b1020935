"""`visreps compare` against a real `mlflow server`: evaluations of a fine-label, a coarse and an untrained network
on a small demo dataset, compared; the logged table equals the statistics of the runs' own tables; bad
selections are refused with one clear error naming the runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from visreps.cli import main
from visreps.config import load_config
from visreps.models import create_model, save_model_file
from visreps.stages.compare import CompareConfig, load_evaluations, run_compare_stage, select_runs
from visreps.stages.compare_statistics import ComparisonError, compare_conditions
from visreps.tracking import download_artifacts, finished_run

from tests.stages.conftest import MODELS

pytestmark = pytest.mark.usefixtures("tracking_on_server")


def _config(*overrides: str) -> CompareConfig:
    return load_config(CompareConfig, "compare", overrides=["source_experiment=compare-tests", "n_draws=200",
                                                           "experiment=compare-tests-out", *overrides])


def test_compare_logs_the_statistics_of_the_evaluations(evaluations: dict[str, str], capsys, tmp_path: Path) -> None:
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
    figures = {a.path for a in _artifacts(run_id, "figures")}
    static = ("png", "svg", "pdf") if shutil.which("chromium") or shutil.which("google-chrome") else ()
    for stem in ("coarseness_raw", "coarseness_normalised", "reconstruction_raw", "dimensionality"):
        assert {f"figures/{stem}.{suffix}" for suffix in ("html", *static)} <= figures, stem
    html = download_artifacts(run_id, "figures/coarseness_raw.html").read_text()
    assert '<script src="https://cdn' not in html and "plotly.js" in html, "the HTML opens offline"
    if static:
        assert download_artifacts(run_id, "figures/coarseness_raw.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert "Chromium" in run.tags["visreps.figures_note"], "without a browser: the HTML and a note saying why"
    assert run_compare_stage(config) == run_id, "the same comparison of the same runs is re-used"
    _check_controls(run_id, evaluations)
    _check_figures_command(run_id, static, tmp_path, capsys)


def _check_figures_command(run_id: str, static: tuple[str, ...], tmp_path: Path, capsys) -> None:
    """`visreps figures` writes the compare run's figures from its logged tables; no compare run: one clear error."""
    assert main(["figures", "--out", str(tmp_path / "paper"), f"run_ids=[{run_id}]"]) == 0
    folder = tmp_path / "paper" / f"demo_rsa_{run_id[:8]}"
    names = {path.name for path in folder.iterdir()}
    for stem in ("coarseness_raw", "reconstruction_raw", "dimensionality"):
        assert {f"{stem}.{suffix}" for suffix in ("html", *static)} <= names, stem
    logged = download_artifacts(run_id, "figures/coarseness_raw.html").read_text()
    assert (folder / "coarseness_raw.html").read_text().count("scatter") == logged.count("scatter")
    capsys.readouterr()
    assert main(["figures", "--out", str(tmp_path / "none"), "experiment=compare-tests-out",
                 "filters.dataset=nowhere"]) != 0
    assert "no complete compare run" in capsys.readouterr().err


def _check_controls(run_id: str, evaluations: dict[str, str]) -> None:
    robustness = pd.read_csv(download_artifacts(run_id, "robustness.csv"))
    coarse = robustness[(robustness.role == "condition") & (robustness.measure == "raw")]
    assert (coarse.n_subsets == 10).all() and coarse.below_reference_holds.between(0, 1).all()
    reliability = pd.read_csv(download_artifacts(run_id, "ranking_reliability.csv"))
    subsets = reliability[reliability["between"] == "subsets"]
    assert set(subsets.region) == {"early", "ventral"} and (subsets.n_pairs == 45).all()
    assert subsets.spearman_mean.between(-1, 1).all()
    assert (reliability[reliability["between"] == "seeds"].n_pairs == 0).all(), "one seed per condition"
    dimensionality = pd.read_csv(download_artifacts(run_id, "dimensionality.csv"))
    fine = dimensionality[dimensionality.run_id == evaluations["fine-rsa"]]
    logged = pd.read_csv(download_artifacts(evaluations["fine-rsa"], "effective_dimensionality.csv"))
    assert fine.effective_dimensionality.tolist() == pytest.approx(logged.effective_dimensionality.tolist())
    assert fine.n_selected.sum() == 4 and fine.most_selected.sum() == 1


def test_reconstruction_control_against_numpy(evaluations: dict[str, str]) -> None:
    """Full rank reproduces the reference exactly (difference 0); M = 2 equals a numpy SVD reconstruction."""
    import numpy as np
    from scipy.stats import spearmanr

    from visreps.stages.compare_controls import pair_tests

    config = _config(f"run_ids=[{evaluations['fine-rsa']},{evaluations['coarse-rsa']}]",
                     "controls.reconstruction_components=[2,30]", "controls.n_subsets=0", "figure_formats=[html]")
    run_id = run_compare_stage(config)
    table = pd.read_parquet(download_artifacts(run_id, "reconstruction.parquet"))
    raw = table[table.measure == "raw"].set_index(["region", "condition"])
    reference = "fine K=8 custom_cnn_small"
    for region in ("early", "ventral"):
        full = raw.loc[(region, f"{reference} PCA M=30")]
        assert full["mean"] == pytest.approx(raw.loc[(region, reference), "mean"], abs=1e-9)
        assert full.difference_vs_reference == pytest.approx(0.0, abs=1e-9) and full.p_vs_reference == 1.0
    evaluation = load_evaluations([finished_run(evaluations["fine-rsa"])], config)[0]
    expected = {}
    for test in pair_tests(evaluation, "cpu"):
        x = np.asarray(test.features, dtype=np.float64)
        u, s, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
        rebuilt = x.mean(axis=0) + (u[:, :2] * s[:2]) @ vt[:2]
        upper = np.triu_indices(x.shape[0], 1)
        model = 1 - np.corrcoef(rebuilt)
        expected.setdefault(test.region, []).append(spearmanr(model[upper], test.neural_rdm.numpy()[upper]).statistic)
    for region, values in expected.items():
        assert raw.loc[(region, f"{reference} PCA M=2"), "mean"] == pytest.approx(np.mean(values), abs=1e-6)


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


def test_sweep_selection_scores_equal_the_evaluations_own_selection(evaluations: dict[str, str]) -> None:
    """`selection_scores` (a sweep's objective: training stimuli only) picks the point and score the full
    evaluation of the same network logged for each (subject, region)."""
    from visreps.stages.compare_controls import evaluation_config
    from visreps.stages.evaluate import selection_scores

    rows = pd.DataFrame(selection_scores(evaluation_config(evaluations["fine-rsa"], "cpu")))
    tidy = pd.read_parquet(download_artifacts(evaluations["fine-rsa"], "results.parquet"))
    logged = tidy[tidy.metric == "selection_score"].set_index(["subject", "region"])
    assert len(rows) == len(logged) == 4
    for row in rows.itertuples():
        expected = logged.loc[(row.subject, row.region)]
        assert row.selected_point == expected.selected_point
        assert row.selection_score == pytest.approx(expected.value, abs=1e-6)


def test_controls_refuse_a_model_that_changed_since_its_evaluation(evaluations: dict[str, str], capsys) -> None:
    """(Runs last: rewrites the coarse network's file.) The controls re-extract activations; a model file
    rewritten after its evaluation is refused naming the run, while the logged statistics alone still compare."""
    from visreps.stages.compare_controls import evaluation_config

    path = evaluation_config(evaluations["coarse-rsa"], "cpu").model
    torch.manual_seed(99)
    save_model_file(path, create_model("custom_cnn_small", 4), {"architecture": "custom_cnn_small", "num_classes": 4,
                                                               "image_size": 32, **MODELS["coarse"]})
    status = main(["compare", "source_experiment=compare-tests", "experiment=compare-tests-out", "filters.analysis=rsa",
                   "n_draws=200", "force=true", "figure_formats=[html]"])
    captured = capsys.readouterr()
    assert status != 0 and evaluations["coarse-rsa"] in captured.err and "changed since" in captured.err
    assert "Traceback" not in captured.err
    run_compare_stage(_config("filters.analysis=rsa", "controls.reconstruction_components=[]", "controls.n_subsets=0",
                              "figure_formats=[html]"))

