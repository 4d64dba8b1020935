"""What the dashboard reads from the tracking store: the complete compare and sweep runs (filtered and paginated
on the server), the tidy tables they logged (read instead of walking their evaluation runs), and the registry
aliases of the models."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from visreps.tracking.runs import client, download_artifacts
from visreps.tracking.store import TrackingError, tracking_uri

#: runs fetched per request
PAGE = 1000


def complete_runs_listing(stage: str, tags: tuple[str, ...], experiments: list[str] | None = None) -> pd.DataFrame:
    """Complete runs of ``stage``, newest first: run_id, experiment, experiment_id, start_time (ms) and one column
    per tag in ``tags`` (``visreps.<tag>``; "" when absent). Found with a server-side filter, a page at a time.
    ``experiments`` None: every experiment."""
    mlflow_client = client()
    wanted, token = {}, None
    while True:
        found = mlflow_client.search_experiments(max_results=PAGE, page_token=token)
        wanted.update({e.experiment_id: e.name for e in found if experiments is None or e.name in experiments})
        token = found.token
        if not token:
            break
    rows, token = [], None
    while wanted:
        page = mlflow_client.search_runs(list(wanted), f"tags.`visreps.stage` = '{stage}' and tags.`visreps.complete` = 'true'",
                                         max_results=PAGE, order_by=["attributes.start_time DESC"], page_token=token)
        rows += [{"run_id": run.info.run_id, "experiment": wanted[run.info.experiment_id],
                  "experiment_id": run.info.experiment_id, "start_time": run.info.start_time,
                  **{tag: run.data.tags.get(f"visreps.{tag}", "") for tag in tags}} for run in page]
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows, columns=["run_id", "experiment", "experiment_id", "start_time", *tags])


def compare_runs(experiments: list[str] | None = None) -> pd.DataFrame:
    """Complete compare runs, newest first: run_id, experiment, experiment_id, start_time, dataset, analysis,
    resampling, n_evaluations."""
    return complete_runs_listing("compare", ("dataset", "analysis", "resampling", "n_evaluations"), experiments)


def sweep_runs(experiments: list[str] | None = None) -> pd.DataFrame:
    """Complete sweep (launcher) runs, newest first: run_id, experiment, experiment_id, start_time, study, sampler."""
    return complete_runs_listing("sweep", ("study", "sampler"), experiments)


def model_aliases(names: list[str]) -> dict[tuple[str, str], list[str]]:
    """(registered model, version) -> its aliases now, for the registered models ``names`` (one registry request
    per name: a registered model carries its alias -> version map, model-version searches do not; names not
    registered give nothing)."""
    from mlflow.exceptions import MlflowException

    mlflow_client, aliases = client(), {}
    for name in sorted(set(names) - {""}):
        try:
            model = mlflow_client.get_registered_model(name)
        except MlflowException:
            continue
        for alias, version in sorted((model.aliases or {}).items()):
            aliases.setdefault((name, str(version)), []).append(alias)
    return aliases


def run_table(run_id: str, artifact: str) -> pd.DataFrame:
    """A table a run logged (``.parquet`` or ``.csv``); an empty frame when the run has none."""
    try:
        path = download_artifacts(run_id, artifact)
    except (TrackingError, OSError):
        return pd.DataFrame()
    return pd.read_parquet(path) if Path(artifact).suffix == ".parquet" else pd.read_csv(path)


def run_url(experiment_id: str | None, run_id: str) -> str | None:
    """The run's page in the MLflow UI of the tracking server (``experiment_id`` None: the UI's direct run route,
    which finds the experiment itself); None for the embedded store."""
    uri = tracking_uri()
    if not uri.startswith("http"):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if experiment_id else f"{uri.rstrip('/')}/#/runs/{run_id}"
