"""The pipeline: its plan (every child configuration resolved up front) and a small end-to-end run that chains
demo data → fine training → labels from pixels and from the fine network → coarse training, then re-uses it all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.browser import headless_chromium, open_page
from tests.conftest import free_port, stage_environment

from visreps.config import ConfigError, load_config
from visreps.data.demo import default_demo_root
from visreps.paths import project_root
from visreps.stages.pipeline import LABELS_RUN, PipelineConfig, PipelineError, plan, run_pipeline
from visreps.tracking import client, download_artifacts, finished_run
from visreps.training import TrainConfig


def test_default_plan_is_the_documented_demo_grid() -> None:
    config = load_config(PipelineConfig, "pipeline")
    jobs = plan(config)
    steps = [(job.step, job.label_source, job.k) for job in jobs]
    assert steps[:3] == [("demo_data", "", None), ("train", "fine", None), ("labels", "pca_pixels", None)]
    for source in ("pca_pixels", "pca_demo_fine"):
        assert [k for step, name, k in steps if step == "train" and name == source] == [2, 4, 8, 16, 32]
    evaluations = [job for job in jobs if job.step == "evaluate"]
    assert len(jobs) == 1 + 1 + 2 * (1 + 5) + len(evaluations)
    assert len(evaluations) == 2 * (11 + 1) and sum(job.epoch0 for job in evaluations) == 2
    assert {job.config.dataset for job in evaluations} == {"demo", "demo_behaviour"}
    assert all(job.config.dataset_root == str(default_demo_root(jobs[0].config)) for job in evaluations)
    images = default_demo_root(jobs[0].config) / "train_images"
    # every training job is configs/train/demo.yaml on top of the train defaults, plus only its own keys
    expected = load_config(TrainConfig, "train", config_file=project_root() / "configs/train/demo.yaml", overrides=[
        "experiment=visreps-pipeline", f"dataset.root={images}", "labels.source_name=pca_pixels", "seed=1",
        f"labels.table=runs:/{LABELS_RUN}/label_tables/k8.parquet", "labels.num_classes=8"])
    k8 = next(job for job in jobs if job.step == "train" and job.label_source == "pca_pixels" and job.k == 8)
    assert k8.config == expected
    fine_source = next(job for job in jobs if job.step == "labels" and job.label_source == "pca_demo_fine")
    assert fine_source.config.source.kind == "model" and fine_source.config.dataset.root == str(images)


@pytest.mark.parametrize(("overrides", "error", "fragment"), [
    (['label_sources.pca_pixels.overrides=["ks=[2,4]"]'], PipelineError, "K=[8, 16, 32]"),
    (["steps=[demo_data,labels]"], PipelineError, "train_fine"),
    (["label_sources.pca_pixels.overrides=[source.kinds=pixels]"], ConfigError, "source.kinds"),
    (["train.config=configs/train/nowhere.yaml"], ConfigError, "nowhere.yaml"),
])
def test_inconsistent_grid_fails_in_the_plan(overrides: list[str], error: type, fragment: str) -> None:
    with pytest.raises(error) as caught:
        plan(load_config(PipelineConfig, "pipeline", overrides=overrides))
    assert fragment in str(caught.value)


SMALL_PIPELINE = """
experiment: visreps-pipeline-tests
demo_data:
  overrides: [n_train_images=256, image_size=32, n_subjects=1, n_train_stimuli_per_subject=30, n_test_stimuli=16,
              n_voxels=4, n_images_per_concept=2, behaviour_dims=3]
train:
  overrides: [epochs=1, model.image_size=32, batch_size=64, device=cpu, progress=false]
evaluate:
  overrides: [analysis=rsa, n_bootstrap=50, progress=false, device=cpu, projection_dim=256]
label_sources:
  pca_pixels:
    overrides: ["ks=[2,4]", compute.num_workers=0, compute.progress=false, n_pole_images=2]
  pca_demo_fine:
    overrides: ["ks=[2,4]", compute.num_workers=0, compute.progress=false, compute.device=cpu, n_pole_images=2]
ks: [2, 4]
"""


def _small_pipeline(tmp_path: Path) -> PipelineConfig:
    """An experiment file holding only the differences from configs/pipeline/default.yaml."""
    experiment = tmp_path / "small_pipeline.yaml"
    experiment.write_text(SMALL_PIPELINE)
    return load_config(PipelineConfig, "pipeline", config_file=experiment)


@pytest.fixture(scope="module")
def small_pipeline(store, tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineConfig, str]:
    """The small pipeline, run once into this module's embedded store: (its config, the pipeline run id)."""
    config = _small_pipeline(tmp_path_factory.mktemp("pipeline"))
    return config, run_pipeline(config)


@pytest.mark.slow
def test_small_pipeline_end_to_end_and_rerun_reuses_everything(small_pipeline: tuple[PipelineConfig, str]) -> None:
    config, first = small_pipeline
    summary = pd.read_csv(download_artifacts(first, "summary.csv"))
    assert list(summary.step) == ["demo_data", "train", "labels", "train", "train", "labels", "train", "train"]
    evaluations = pd.read_csv(download_artifacts(first, "evaluations.csv"))
    scores = evaluations[evaluations.metric == "score"]
    assert len(scores[scores.dataset == "demo"]) == (5 + 1) * 2  # networks × regions (RSA only here)
    assert len(scores[scores.dataset == "demo_behaviour"]) == 5 + 1 and scores.untrained.sum() == 2 + 1
    trained = summary[summary.step == "train"]
    assert list(trained.label_source) == ["fine", "pca_pixels", "pca_pixels", "pca_demo_fine", "pca_demo_fine"]
    assert list(trained.K) == [64, 2, 4, 2, 4]
    assert trained.heldout_accuracy.between(0, 1).all()

    pipeline = finished_run(first)
    assert pipeline.metrics["n_child_runs"] == 8
    assert "heldout_accuracy.pca_pixels.k4.s1" in pipeline.metrics
    figures = {item.path for item in client().list_artifacts(first, "figures")}
    assert figures == {"figures/heldout_accuracy_vs_k.png", "figures/demo_rsa_vs_k.png",
                       "figures/demo_behaviour_rsa_vs_k.png"}
    for run_id in summary.run_id:
        assert finished_run(run_id).tags["visreps.parent_run_id"] == first
    for dataset in ("demo", "demo_behaviour"):  # one comparison per dataset and analysis, fine network as reference
        comparison = pd.read_csv(download_artifacts(pipeline.tags[f"visreps.compare.{dataset}.rsa"], "comparison.csv"))
        raw = comparison[comparison.measure == "raw"]
        assert sorted(raw.role.unique()) == ["condition", "reference", "untrained"]
        assert len(raw[raw.role == "condition"]) == 4 * raw.region.nunique() and raw.q_vs_reference.notna().any()

    # the fine-label network defined the second label source, and the coarse runs used those tables
    fine_run = finished_run(trained.run_id.iloc[0])
    labels_from_model = finished_run(summary.run_id.iloc[5])
    assert labels_from_model.params["source.name"] == f"runs:/{fine_run.run_id}/model"
    coarse = finished_run(trained.run_id.iloc[3])
    assert coarse.params["labels.table"] == f"runs:/{labels_from_model.run_id}/label_tables/k2.parquet"
    assert coarse.tags["visreps.K"] == "2" and coarse.tags["visreps.label_source"] == "pca_demo_fine"
    versions = client().get_model_version_by_alias("visreps-custom_cnn_small", "k4-pca_pixels-s1")
    assert versions.run_id == trained.run_id.iloc[2]

    second = run_pipeline(config)
    assert second != first
    again = pd.read_csv(download_artifacts(second, "summary.csv"))
    assert list(again.run_id) == list(summary.run_id), "identical child configurations must be re-used"
    repeated = pd.read_csv(download_artifacts(second, "evaluations.csv"))
    assert list(repeated.run_id) == list(evaluations.run_id), "evaluations are re-used too"


def _dashboard():
    import sys

    sys.path.insert(0, str(project_root() / "dashboards"))
    import app  # dashboards/ is run as a script, not a package

    return app


@pytest.mark.slow
def test_the_pipeline_results_open_in_the_dashboard(small_pipeline: tuple[PipelineConfig, str]) -> None:
    """Every view draws the pipeline's demo results: alignment vs K with CIs, baselines and ceiling; per subject;
    layer selection; the networks' training curves; the runs with their registry aliases."""
    dashboard = _dashboard()
    _, first = small_pipeline
    results = dashboard.Results()
    runs = results.refresh()
    run_id = finished_run(first).tags["visreps.compare.demo.rsa"]
    assert run_id in set(runs.run_id)
    sources = ["pca_pixels", "pca_demo_fine"]
    figure = dashboard.draw_view(results, "coarseness", run_id, "raw", sources)[0][0].figure
    names = {trace.name for trace in figure.data if trace.name}
    assert {"pca_pixels", "pca_demo_fine", "noise ceiling (subjects' range)"} <= names
    assert any(name.startswith("reference: fine") for name in names) and any(name.startswith("untrained") for name in names)
    assert all(trace.error_y.array is not None for trace in figure.data if trace.name in sources), "CIs drawn"
    training = dashboard.draw_view(results, "training", run_id, "raw", sources)[0][0].figure
    lines = {trace.name for trace in training.data}
    assert {"pca_pixels K=2 custom_cnn_small", "pca_demo_fine K=4 custom_cnn_small"} <= lines
    evaluations = pd.read_csv(download_artifacts(run_id, "evaluations.csv"))
    k2 = evaluations[evaluations.condition == "pca_pixels K=2 custom_cnn_small"].model_run_id.iloc[0]
    history = pd.read_csv(download_artifacts(k2, "training_history.csv"))
    drawn = next(trace for trace in training.data if trace.name == "pca_pixels K=2 custom_cnn_small")
    assert list(drawn.y) == pytest.approx(history.train_loss.dropna().tolist()), "the training run's own history"
    assert dashboard.draw_view(results, "selection", run_id, "raw", sources)[0][0].id == "selection"
    table = dashboard.draw_view(results, "runs", run_id, "raw", sources)[0][0]
    cells = [str(cell.children) for row in table.children[1].children for cell in row.children]
    assert "@k4-pca_pixels-s1" in cells, "the registry alias of each model"


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian chromium and chromium-driver (.ci/run installs them)")
def test_dashboard_in_headless_chromium(small_pipeline: tuple[PipelineConfig, str], tmp_path: Path) -> None:
    """`visreps dashboard` on the pipeline's store, as the pipeline's last line tells users: the page loads with
    the demo's alignment vs K, the measure filter changes the plot, the training and runs views open; a screenshot
    is kept (copied to $VISREPS_TEST_ARTIFACTS when set)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "visreps.cli", "dashboard", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=stage_environment(Path(os.environ["VISREPS_HOME"])))
    browser = headless_chromium(tmp_path / "profile")
    compare_run = finished_run(small_pipeline[1]).tags["visreps.compare.demo.rsa"]
    try:
        open_page(browser, f"http://127.0.0.1:{port}/?run={compare_run}", server)
        wait = WebDriverWait(browser, 60)
        wait.until(shown.text_to_be_present_in_element((By.ID, "coarseness"), "alignment vs K (raw)"))
        assert "noise ceiling" in browser.find_element(By.ID, "coarseness").text
        browser.find_element(By.XPATH, "//label[contains(., 'normalised by the noise ceiling')]//input").click()
        wait.until(shown.text_to_be_present_in_element((By.ID, "coarseness"), "alignment vs K (normalised)"))
        assert "score / noise ceiling" in browser.find_element(By.ID, "coarseness").text
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        browser.find_element(By.XPATH, "//div[contains(@class, 'tab') and contains(., 'training curves')]").click()
        wait.until(shown.text_to_be_present_in_element((By.ID, "training"), "heldout accuracy"))
        browser.find_element(By.XPATH, "//div[contains(@class, 'tab') and normalize-space(.)='runs']").click()
        wait.until(shown.text_to_be_present_in_element((By.ID, "runs-table"), "@k4-pca_pixels-s1"))
        assert shot.stat().st_size > 10_000
        keep = os.environ.get("VISREPS_TEST_ARTIFACTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / "dashboard.png")
    finally:
        browser.quit()
        server.terminate()
        server.wait(timeout=20)
