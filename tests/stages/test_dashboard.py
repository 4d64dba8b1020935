"""The dashboard over a real `mlflow server` holding the compare runs of small demo evaluations: its data layer
(compare runs found on the server, their tables), the drawing callback (filters change the figures), the empty
store's message. The browser test (headless Chromium) opens the small pipeline's results: tests/test_pipeline.py."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from visreps.config import load_config
from visreps.paths import project_root
from visreps.stages.compare import CompareConfig, run_compare_stage

sys.path.insert(0, str(project_root() / "dashboards"))
import app as dashboard  # noqa: E402  (dashboards/ is not a package: it is run as a script)


pytestmark = pytest.mark.usefixtures("tracking_on_server")


@pytest.fixture(scope="module")
def compare_run(evaluations: dict[str, str]) -> str:
    config = load_config(CompareConfig, "compare", overrides=[
        "source_experiment=compare-tests", "experiment=dashboard-tests", "filters.analysis=rsa", "n_draws=200",
        "controls.n_subsets=0", "controls.reconstruction_components=[1,2,3]", "figure_formats=[html]"])
    return run_compare_stage(config)


def test_data_layer_finds_the_compare_runs_and_reads_their_tables(compare_run: str) -> None:
    from visreps.tracking.results import compare_runs, run_table, run_url

    runs = compare_runs(["dashboard-tests"])
    assert list(runs.run_id) == [compare_run] and runs.dataset.iloc[0] == "demo" and runs.analysis.iloc[0] == "rsa"
    assert len(run_table(compare_run, "comparison.parquet")) and run_table(compare_run, "nothing.csv").empty
    assert run_url(runs.experiment_id.iloc[0], compare_run).endswith(f"/runs/{compare_run}")



def test_compare_tables_equal_the_evaluations_own(compare_run: str, evaluations: dict[str, str]) -> None:
    """The per-subject and selection tables a compare run logs, recomputed here from the evaluation's own tables."""
    from visreps.stages.compare_tables import compare_run_table
    from visreps.tracking import download_artifacts

    fine = evaluations["fine-rsa"]
    own = pd.read_parquet(download_artifacts(fine, "results.parquet"))
    subjects = compare_run_table(compare_run, "subjects")
    mine = subjects[(subjects.run_id == fine) & (subjects.measure == "raw")].sort_values(["subject", "region"])
    expected = own[own.metric == "score"].sort_values(["subject", "region"])
    assert mine.score.tolist() == pytest.approx(expected.value.tolist()) and len(mine) == 4
    curves = pd.read_parquet(download_artifacts(fine, "selection.parquet"))
    selection = compare_run_table(compare_run, "selection")
    mine = selection[selection.run_id == fine].sort_values(["region", "point_index"])
    by_hand = curves.groupby(["region", "point_index"]).selection_score.agg(["mean", "std"]).reset_index()
    assert mine.selection_score.tolist() == pytest.approx(by_hand["mean"].tolist())
    assert mine.selection_score_sd.tolist() == pytest.approx(by_hand["std"].tolist(), nan_ok=True)
    chosen = curves[curves.selected].groupby("region").size()
    assert mine.groupby("region").n_selected.sum().to_dict() == chosen.to_dict() and (mine.n_subjects == 2).all()


def _graphs(components: list) -> dict:
    return {component.id: component.figure for component in components}


def test_views_follow_the_filters(compare_run: str) -> None:
    results = dashboard.Results()
    results.refresh()
    graphs, message = dashboard.draw_view(results, "coarseness", compare_run, "raw", ["pca_pixels"])
    names = {trace.name for trace in graphs[0].figure.data}
    assert graphs[0].id == "coarseness" and message == ""
    assert "pca_pixels" in names and any(name.startswith("reference") for name in names)
    assert graphs[0].figure.layout.yaxis.title.text == "score"
    without, _ = dashboard.draw_view(results, "coarseness", compare_run, "raw", [])
    assert "pca_pixels" not in {trace.name for trace in without[0].figure.data}
    normalised, _ = dashboard.draw_view(results, "coarseness", compare_run, "normalised", ["pca_pixels"])
    assert normalised[0].figure.layout.yaxis.title.text == "score / noise ceiling"
    assert dashboard.draw_view(results, "coarseness", compare_run, "raw", ["pca_pixels"], ["resnet"])[0] == []

    subjects = _graphs(dashboard.draw_view(results, "subjects", compare_run, "raw", ["pca_pixels"])[0])["subjects"]
    assert {trace.name for trace in subjects.data} >= {"sub-01 pca_pixels", "sub-02 pca_pixels", "sub-01 reference"}
    selection = _graphs(dashboard.draw_view(results, "selection", compare_run, "raw", ["pca_pixels"])[0])["selection"]
    assert "pca_pixels K=2 custom_cnn_small" in {trace.name for trace in selection.data}
    controls = _graphs(dashboard.draw_view(results, "controls", compare_run, "raw", ["pca_pixels"])[0])
    assert set(controls) == {"reconstruction", "dimensionality"}
    graphs, message = dashboard.draw_view(results, "training", compare_run, "raw", ["pca_pixels"])
    assert graphs == [] and "no visreps training run" in message, "model files have no training run"
    table, _ = dashboard.draw_view(results, "runs", compare_run, "raw", ["pca_pixels"])
    links = [cell.children for row in table[0].children[1].children for cell in row.children
             if getattr(cell.children, "href", None)]
    assert len(links) == 3, "every evaluation links into the MLflow UI (model files: no training run to link)"
    assert all("/#/experiments/" in link.href and link.href.split("/runs/")[1].startswith(link.children) for link in links)
    assert dashboard.draw_view(results, "coarseness", None, "raw", [])[1] == dashboard.EMPTY
    assert dashboard.draw_view(results, "sweeps", compare_run, "raw", [], sweep_id=None)[1] == dashboard.NO_SWEEPS
