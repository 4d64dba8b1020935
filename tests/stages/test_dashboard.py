"""The dashboard over a real `mlflow server` holding the compare runs of small demo evaluations: its data layer
(compare runs found on the server, their tables), the drawing callback (filters change the figures), the empty
store's message, and one end-to-end test in headless Chromium (the page loads, a filter changes, the plot follows;
a screenshot is kept)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
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


def test_drawing_follows_the_filters(compare_run: str) -> None:
    results = dashboard.Results()
    results.refresh()
    raw = dashboard.draw(results, compare_run, "raw", ["pca_pixels"])
    names = {trace.name for trace in raw[0].data}
    assert "pca_pixels" in names and any(name.startswith("reference") for name in names)
    assert raw[0].layout.yaxis.title.text == "score" and len(raw[1].data) > 0 and raw[4] == ""
    without = dashboard.draw(results, compare_run, "raw", [])
    assert "pca_pixels" not in {trace.name for trace in without[0].data}
    normalised = dashboard.draw(results, compare_run, "normalised", ["pca_pixels"])
    assert normalised[0].layout.yaxis.title.text == "score / noise ceiling"
    assert dashboard.draw(results, None, "raw", [])[4] == dashboard.EMPTY


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian chromium and chromium-driver (.ci/run installs them)")
def test_page_in_headless_chromium_updates_the_plot(compare_run: str, mlflow_server: str, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as wait_for
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    server = subprocess.Popen([sys.executable, str(project_root() / "dashboards" / "app.py"), "--tracking-uri",
                               mlflow_server, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server})
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1400,1800"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        _open(browser, f"http://127.0.0.1:{port}/", server)
        wait = WebDriverWait(browser, 60)
        wait.until(wait_for.text_to_be_present_in_element((By.ID, "coarseness"), "alignment vs K (raw)"))
        browser.find_element(By.XPATH, "//label[contains(., 'normalised by the noise ceiling')]//input").click()
        wait.until(wait_for.text_to_be_present_in_element((By.ID, "coarseness"), "alignment vs K (normalised)"))
        assert "score / noise ceiling" in browser.find_element(By.ID, "coarseness").text
        assert browser.find_element(By.ID, "runs-table").find_elements(By.TAG_NAME, "a"), "links into the MLflow UI"
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        keep = os.environ.get("VISREPS_TEST_ARTIFACTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / "dashboard.png")
    finally:
        browser.quit()
        server.terminate()
        server.wait(timeout=20)


def _open(browser, url: str, server: subprocess.Popen, timeout_s: float = 60.0) -> None:
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stdout.read()
        with contextlib.suppress(WebDriverException):  # the server is not listening yet
            browser.get(url)
            if "visreps" in browser.title:
                return
        time.sleep(0.5)
    raise AssertionError(f"the dashboard did not answer at {url}")
