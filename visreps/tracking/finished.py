"""Finished runs: find the complete run a stage re-uses (same configuration and input contents), the complete
runs of a stage for a comparison, and what a finished run offers downstream stages (``FinishedRun``).

A run counts only when it is FINISHED and tagged ``visreps.complete = true`` (``visreps.tracking.runs``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from visreps.config import ConfigModel
from visreps.tracking.identity import SUPERSEDED_TAG, RunIdentity, run_key
from visreps.tracking.runs import COMPLETE_TAG, client
from visreps.tracking.store import TrackingError, redact, tracking_uri



@dataclass(frozen=True)
class FinishedRun:
    """What a reused run offers downstream stages."""

    run_id: str
    experiment_id: str
    artifact_uri: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


def _newest_complete(mlflow_client: MlflowClient, tag: str, value: str) -> Any | None:
    experiment_ids = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not experiment_ids:
        return None
    found = mlflow_client.search_runs(
        experiment_ids,
        filter_string=f"tags.`{tag}` = '{value}' and tags.`{COMPLETE_TAG}` = 'true' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return found[0] if found else None


def newest_complete_run(tags: Mapping[str, str]) -> FinishedRun | None:
    """The newest complete, FINISHED run (any experiment) carrying every tag of ``tags``, or None."""
    mlflow_client = client()
    experiment_ids = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not experiment_ids:
        return None
    conditions = [f"tags.`{key}` = '{value}'" for key, value in tags.items()]
    found = mlflow_client.search_runs(
        experiment_ids, filter_string=" and ".join(conditions + [f"tags.`{COMPLETE_TAG}` = 'true'",
                                                                   "attributes.status = 'FINISHED'"]),
        order_by=["attributes.start_time DESC"], max_results=1)
    return _as_finished(found[0]) if found else None


def complete_runs(experiment_name: str, tags: Mapping[str, str], max_results: int = 50000) -> list[FinishedRun]:
    """Every complete, FINISHED run of experiment ``experiment_name`` carrying all ``tags`` (oldest first);
    TrackingError when the experiment does not exist."""
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise TrackingError(f"there is no experiment {experiment_name!r} on {redact(tracking_uri())}; name the "
                            "experiment the evaluations were logged to")
    conditions = [f"tags.`{key}` = '{value}'" for key, value in tags.items()]
    found = mlflow_client.search_runs(
        [experiment.experiment_id], max_results=max_results, order_by=["attributes.start_time ASC"],
        filter_string=" and ".join(conditions + [f"tags.`{COMPLETE_TAG}` = 'true'", "attributes.status = 'FINISHED'"]))
    return [_as_finished(run) for run in found]


def stage_runs(stage: str, experiment_name: str, filters: Mapping[str, str] | None = None,
               run_ids: Sequence[str] = ()) -> tuple[list[FinishedRun], list[str]]:
    """(runs, ids of ``run_ids`` that are not ``stage`` runs): the runs ``run_ids`` when given, else the complete runs
    of ``stage`` in ``experiment_name`` tagged ``visreps.<key> = value`` for every filter (none when the experiment
    does not exist yet). The callers say what an empty or wrong selection means for them."""
    if run_ids:
        runs = [finished_run(run_id) for run_id in run_ids]
        return runs, [run.run_id for run in runs if run.tags.get("visreps.stage") != stage]
    tags = {"visreps.stage": stage, **{f"visreps.{key}": str(value) for key, value in (filters or {}).items()}}
    try:
        return complete_runs(experiment_name, tags), []
    except TrackingError:  # no such experiment
        return [], []


def find_finished_run(stage: str, config: ConfigModel, stage_version: int = 1,
                      inputs: Mapping[str, str] | None = None) -> FinishedRun | None:
    """The newest complete, FINISHED run of ``stage`` with the same run key (configuration and inputs), or None."""
    found = _newest_complete(client(), "visreps.run_key", run_key(stage, config, stage_version, inputs))
    return _as_finished(found) if found is not None else None


def reusable_run(stage: str, config: ConfigModel, stage_version: int = 1, inputs: Mapping[str, str] | None = None,
                 force: bool = False, identifying: tuple[str, ...] = ()) -> FinishedRun | None:
    """The finished run a stage re-uses instead of running, or None; prints one line saying which, or why not.

    Re-used only when configuration *and* inputs are the same; when only the inputs differ from the newest
    finished run of the same configuration, the line names them; inputs named in ``identifying`` say what the run
    is about (an evaluation's model) and are part of "the same configuration". Under `mlflow run`, the launcher's run is tagged
    ``visreps.reused_run_id`` so it points at the result. ``force`` re-uses nothing.
    """
    if force:
        return None
    identity = RunIdentity(stage, config, stage_version, dict(inputs or {}), identifying)
    mlflow_client = client()
    found = _newest_complete(mlflow_client, "visreps.run_key", identity.key)
    if found is not None:
        print(f"{stage}: re-using finished run {found.info.run_id} (same configuration and inputs; "
              "force=true recomputes)")
        launcher = os.environ.get("MLFLOW_RUN_ID")
        if launcher and launcher != found.info.run_id:
            mlflow_client.set_tag(launcher, "visreps.reused_run_id", found.info.run_id)
            mlflow_client.set_tag(launcher, "mlflow.runName", f"{stage} -> reused {found.info.run_id[:8]}")
        return _as_finished(found)
    same_config = _newest_complete(mlflow_client, "visreps.config_key", identity.config_key)
    if same_config is not None:
        changed = identity.changed_inputs(same_config.data.tags)
        print(f"{stage}: {', '.join(changed) or 'inputs'} changed since finished run {same_config.info.run_id} "
              "(same configuration); running again")
    return None


def supersede_finished(stage: str, config: ConfigModel, stage_version: int, inputs: Mapping[str, str] | None,
                       keep_run_id: str) -> list[str]:
    """After ``force=true``: every other complete run of the same run key is marked incomplete and tagged
    ``visreps.superseded_by``, so exactly one complete result is visible. Returns the superseded run ids."""
    mlflow_client = client()
    key = run_key(stage, config, stage_version, inputs)
    experiment_ids = [e.experiment_id for e in mlflow_client.search_experiments()]
    found = mlflow_client.search_runs(
        experiment_ids, filter_string=f"tags.`visreps.run_key` = '{key}' and tags.`{COMPLETE_TAG}` = 'true'",
        max_results=1000)
    older = [run.info.run_id for run in found if run.info.run_id != keep_run_id]
    for run_id in older:
        mlflow_client.log_batch(run_id, tags=[RunTag(COMPLETE_TAG, "false"), RunTag(SUPERSEDED_TAG, keep_run_id)])
    return older


def _as_finished(run: Any) -> FinishedRun:
    return FinishedRun(
        run.info.run_id, run.info.experiment_id, run.info.artifact_uri,
        dict(run.data.tags), dict(run.data.params), dict(run.data.metrics),
    )


def finished_run(run_id: str) -> FinishedRun:
    """Tags, params and latest metrics of run ``run_id``; TrackingError if it does not exist or did not finish."""
    try:
        run = client().get_run(run_id)
    except MlflowException as error:
        raise TrackingError(f"run {run_id} is not in the tracking store {redact(tracking_uri())} "
                            f"({str(error).splitlines()[0]}); check the run id and MLFLOW_TRACKING_URI") from None
    if run.info.status != "FINISHED" or run.data.tags.get(COMPLETE_TAG) != "true":
        raise TrackingError(f"run {run_id} is {run.info.status} and not marked complete; re-run its stage")
    return _as_finished(run)
