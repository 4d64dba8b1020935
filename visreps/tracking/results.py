"""What the dashboard reads from the tracking store: the complete compare runs (filtered and paginated on the
server) and the tidy tables they logged (read instead of walking their evaluation runs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from visreps.tracking.runs import client, download_artifacts
from visreps.tracking.store import TrackingError, tracking_uri

#: runs fetched per request
PAGE = 1000


def compare_runs(experiments: list[str] | None = None) -> pd.DataFrame:
    """Complete compare runs, newest first: run_id, experiment, experiment_id, dataset, analysis, resampling,
    n_evaluations, start_time (ms). ``experiments`` None: every experiment."""
    mlflow_client = client()
    found = mlflow_client.search_experiments(max_results=PAGE)
    wanted = {e.experiment_id: e.name for e in found if experiments is None or e.name in experiments}
    rows, token = [], None
    while wanted:
        page = mlflow_client.search_runs(list(wanted), "tags.`visreps.stage` = 'compare' and tags.`visreps.complete` = 'true'",
                                         max_results=PAGE, order_by=["attributes.start_time DESC"], page_token=token)
        for run in page:
            tags = run.data.tags
            rows.append({"run_id": run.info.run_id, "experiment": wanted[run.info.experiment_id],
                         "experiment_id": run.info.experiment_id, "dataset": tags.get("visreps.dataset", ""),
                         "analysis": tags.get("visreps.analysis", ""), "resampling": tags.get("visreps.resampling", ""),
                         "n_evaluations": tags.get("visreps.n_evaluations", ""), "start_time": run.info.start_time})
        token = page.token
        if not token:
            break
    columns = ["run_id", "experiment", "experiment_id", "dataset", "analysis", "resampling", "n_evaluations", "start_time"]
    return pd.DataFrame(rows, columns=columns)


def run_table(run_id: str, artifact: str) -> pd.DataFrame:
    """A table a run logged (``.parquet`` or ``.csv``); an empty frame when the run has none."""
    try:
        path = download_artifacts(run_id, artifact)
    except (TrackingError, OSError):
        return pd.DataFrame()
    return pd.read_parquet(path) if Path(artifact).suffix == ".parquet" else pd.read_csv(path)


def run_url(experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI of the tracking server; None for the embedded store."""
    uri = tracking_uri()
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if uri.startswith("http") else None
