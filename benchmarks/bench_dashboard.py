"""First paint of the dashboard over a tracking server holding 2,000 evaluation runs.

Fills a fresh `visreps server` (SQLite backend, temporary folder, 127.0.0.1) with ``--evaluations`` evaluation
parent runs (tags as the evaluate stage writes them) split over ``--studies`` (dataset, analysis) pairs, and one
compare run per pair whose tables (comparison, subjects, selection, training, evaluations; realistic sizes: 8
subjects × 8 regions, 14 points, 30 epochs) reference those runs, plus ``--old-compares`` superseded compare runs.
Then, side by side:

- ``visreps``: the dashboard's own path, cold (a new ``Results``): the compare-run listing (server-side filter) and
  the coarseness view of the newest run, in-process; and the real first paint: a freshly started
  `dashboards/app.py`, headless Chromium loading the page until the coarseness plot's title is drawn, timed inside
  the page from navigation start, in a fresh browser and on a reload (needs Debian chromium and chromium-driver;
  skipped otherwise);
- ``reference``: what a dashboard walking the evaluation runs instead would do before drawing anything: list the
  evaluation runs of one study through ``search_runs`` (every page), and read each run's tags.

  python benchmarks/bench_dashboard.py [--evaluations 2000] [--studies 4] [--old-compares 20] [--repeats 3]

Target (issue "Dashboard"): first paint within 3 s for 2,000 runs on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
from bench_tracking_load import start_server  # noqa: E402  (`visreps server` on a free port, waits for /health)
from tests.conftest import free_port, stop_server  # noqa: E402
SOURCES, KS, REGIONS, SUBJECTS, POINTS, EPOCHS = ("pca_pixels", "pca_model"), [2 ** i for i in range(1, 11)], 8, 8, 14, 30


def _networks(n: int) -> list[dict[str, object]]:
    """n networks: the fine reference and untrained per seed, and label source × K per seed."""
    rows, seed = [], 0
    while len(rows) < n:
        seed += 1
        rows += [{"role": "reference", "label_source": "fine", "K": 1000, "seed": seed},
                 {"role": "untrained", "label_source": "untrained", "K": None, "seed": seed}]
        rows += [{"role": "condition", "label_source": s, "K": k, "seed": seed} for s in SOURCES for k in KS]
    for row in rows:
        row["condition"] = {"reference": "fine K=1000 cnn", "untrained": "untrained cnn"}.get(
            str(row["role"]), f"{row['label_source']} K={row['K']} cnn")
    return rows[:n]


def _evaluation_run(client, experiment_id: str, dataset: str, analysis: str, network: dict) -> str:
    tags = {"visreps.stage": "evaluate", "visreps.complete": "true", "visreps.dataset": dataset,
            "visreps.analysis": analysis, "visreps.label_source": str(network["label_source"]),
            "visreps.K": str(network["K"] or ""), "visreps.seed": str(network["seed"]), "visreps.architecture": "cnn"}
    run = client.create_run(experiment_id, tags=tags)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _tables(networks: list[dict], run_ids: list[str], rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Compare tables of the sizes a study of these networks logs."""
    evaluations = pd.DataFrame([{**n, "architecture": "cnn", "run_id": r, "model_run_id": r, "registered_model": "",
                                 "model_version": ""} for n, r in zip(networks, run_ids)])
    regions = [f"region{i}" for i in range(REGIONS)]
    comparison = []
    for (condition, role, source, k), _ in evaluations.groupby(["condition", "role", "label_source", "K"], dropna=False):
        for region in regions:
            for measure in ("raw", "normalised"):
                mean = float(rng.uniform(0.1, 0.5))
                comparison.append({"region": region, "measure": measure, "condition": condition, "role": role,
                                   "label_source": source, "K": k, "architecture": "cnn", "mean": mean,
                                   "ci_low": mean - 0.05, "ci_high": mean + 0.05, "ceiling_low": 0.6, "ceiling_high": 0.8,
                                   "below_reference": bool(rng.random() < 0.3)})
    base = evaluations.loc[evaluations.index.repeat(REGIONS * SUBJECTS * 2)].reset_index(drop=True)
    subjects = base.assign(subject=np.tile(np.repeat([f"sub-{i}" for i in range(SUBJECTS)], REGIONS * 2), len(evaluations)),
                           region=np.tile(np.repeat(regions, 2), SUBJECTS * len(evaluations)),
                           measure=np.tile(["raw", "normalised"], REGIONS * SUBJECTS * len(evaluations)),
                           score=rng.random(len(base)), selected_point="fc1")
    base = evaluations.loc[evaluations.index.repeat(REGIONS * POINTS)].reset_index(drop=True)
    selection = base.assign(region=np.tile(np.repeat(regions, POINTS), len(evaluations)),
                            point_index=np.tile(np.arange(POINTS), REGIONS * len(evaluations)),
                            selection_score=rng.random(len(base)), selection_score_sd=0.01, n_selected=1, n_subjects=SUBJECTS)
    selection["point"] = "point" + selection.point_index.astype(str)
    trained = evaluations[evaluations.role != "untrained"]
    base = trained.loc[trained.index.repeat(EPOCHS + 1)].reset_index(drop=True)
    training = base.assign(epoch=np.tile(np.arange(EPOCHS + 1), len(trained)), train_loss=rng.random(len(base)),
                           heldout_accuracy=rng.random(len(base)))
    return {"comparison": pd.DataFrame(comparison), "subjects": subjects, "selection": selection, "training": training,
            "evaluations": evaluations}


def populate(folder: Path, n_evaluations: int, n_studies: int, n_old: int, seed: int = 0) -> dict[str, object]:
    """Fill the store the server will serve (its SQLite file, written directly before the server starts: faster
    than 4,000 HTTP requests); returns the newest compare run id, the evaluation experiment and its last study."""
    from mlflow import MlflowClient

    from visreps.stages.compare_tables import LOGGED_TABLES

    client, rng = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}"), np.random.default_rng(seed)
    evaluate = client.create_experiment("bench-evaluate", artifact_location=str(folder / "artifacts" / "evaluate"))
    compare = client.create_experiment("bench-compare", artifact_location=str(folder / "artifacts" / "compare"))
    studies = [("nsd", "rsa"), ("nsd", "encoding"), ("things", "rsa"), ("behaviour", "rsa")][:n_studies]
    per_study = n_evaluations // len(studies)
    networks = _networks(per_study)
    newest = None
    with tempfile.TemporaryDirectory() as scratch:
        for dataset, analysis in studies:
            run_ids = [_evaluation_run(client, evaluate, dataset, analysis, network) for network in networks]
            for old in range(n_old // len(studies) + 1):
                tags = {"visreps.stage": "compare", "visreps.complete": "true", "visreps.dataset": dataset,
                        "visreps.analysis": analysis, "visreps.n_evaluations": str(len(run_ids))}
                run = client.create_run(compare, tags=tags)
                if old == n_old // len(studies):  # the last one of each study gets the tables
                    for name, table in _tables(networks, run_ids, rng).items():
                        path = Path(scratch) / LOGGED_TABLES[name][0]
                        table.to_parquet(path) if path.suffix == ".parquet" else table.to_csv(path, index=False)
                        client.log_artifact(run.info.run_id, str(path))
                        path.unlink()
                client.set_terminated(run.info.run_id)
                newest = run.info.run_id
    return {"compare_run": newest, "evaluate_experiment": evaluate, "study": studies[-1]}


def time_data_layer(url: str, run_id: str) -> tuple[float, float]:
    """(listing s, listing + coarseness view s) of a cold dashboard data layer, in-process."""
    os.environ["MLFLOW_TRACKING_URI"] = url
    sys.path.insert(0, str(REPO / "dashboards"))
    import app

    started = time.perf_counter()
    results = app.Results()
    results.refresh()
    listed = time.perf_counter() - started
    sources = list(SOURCES)
    graphs, _ = app.draw_view(results, "coarseness", run_id, "raw", sources)
    graphs[0].figure.to_json()  # what the server sends
    return listed, time.perf_counter() - started


PAINTED = """
const done = arguments[arguments.length - 1];
(function check() {
    const title = document.querySelector('#coarseness .gtitle');
    if (title && title.textContent.includes('alignment vs K (raw)')) { done(performance.now()); }
    else { requestAnimationFrame(check); }
})();"""


def time_browser(url: str, run_id: str) -> tuple[float, float] | None:
    """(first load, reload) seconds from navigation start to the coarseness plot's title drawn, measured inside
    the page (performance.now() on the animation frame that finds it; no WebDriver polling competing for the CPU),
    in headless Chromium against a freshly started dashboard; None without chromium."""
    import shutil

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None
    from tests.browser import headless_chromium

    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "dashboards" / "app.py"), "--tracking-uri", url, "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as profile:
        browser = headless_chromium(Path(profile))
        browser.set_script_timeout(60)
        try:
            for _ in range(240):  # the app serves once it has listed the runs
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/_dash-layout", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            painted = []
            for _ in range(2):
                browser.get(f"http://127.0.0.1:{port}/?run={run_id}")
                painted.append(browser.execute_async_script(PAINTED) / 1000)
            return painted[0], painted[1]
        finally:
            browser.quit()
            server.terminate()
            server.wait(timeout=20)


def time_reference(url: str, experiment_id: str, study: tuple[str, str]) -> tuple[float, int]:
    """(s, runs) to list one study's evaluation runs with their tags, every page of search_runs."""
    from mlflow import MlflowClient

    client, started, count, token = MlflowClient(url), time.perf_counter(), 0, None
    query = f"tags.`visreps.stage` = 'evaluate' and tags.`visreps.dataset` = '{study[0]}' and tags.`visreps.analysis` = '{study[1]}'"
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        count += sum(1 for run in page if run.data.tags)
        token = page.token
        if not token:
            return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=2000)
    parser.add_argument("--studies", type=int, default=4, choices=range(1, 5))
    parser.add_argument("--old-compares", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        filled = populate(Path(folder), args.evaluations, args.studies, args.old_compares)
        print(f"filled the store: {args.evaluations} evaluation runs, {args.studies} studies, compare runs with "
              f"tables, in {time.perf_counter() - started:.0f} s")
        url, server = start_server(Path(folder), f"sqlite:///{Path(folder) / 'mlflow.db'}", 2, None)
        try:
            for repeat in range(args.repeats):
                listed, painted = time_data_layer(url, filled["compare_run"])
                browser = time_browser(url, filled["compare_run"])
                reference, count = time_reference(url, filled["evaluate_experiment"], filled["study"])
                shown = (f"{browser[0]:.2f} s (fresh browser), {browser[1]:.2f} s (reload)" if browser is not None
                         else "skipped (no chromium)")
                print(f"[{repeat}] visreps: listing {listed:.2f} s, listing + coarseness view {painted:.2f} s, browser first "
                      f"paint {shown} | reference: listing one study's {count} evaluation runs {reference:.2f} s")
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
