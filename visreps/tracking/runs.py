"""Stage runs: start one (or continue the run `mlflow run` created), log to it, find an identical finished one.

Every stage run carries the tags ``visreps.stage``, ``visreps.stage_version``, ``visreps.config_hash``, the
identity tags of ``visreps.tracking.identity`` (``visreps.config_key``, ``visreps.run_key`` = configuration +
input fingerprints, ``visreps.input.<name>``, owner and heartbeat), ``visreps.git_commit``; the resolved
configuration whole as ``config.yaml`` and flattened as params; and ``visreps.complete = true`` only once the
stage has finished all its work, so an interrupted run never looks finished.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from visreps.config import ConfigModel, config_hash, flatten_config, to_yaml
from visreps.tracking.identity import (
    PID_TAG,
    SUPERSEDED_TAG,
    Heartbeat,
    RunIdentity,
    describe_live,
    end_orphans,
    is_live,
    owner_tags,
    run_key,
    running_runs,
)
from visreps.tracking.store import (
    RunInProgress,
    TrackingError,
    ensure_tracking_available,
    experiment_artifact_location,
    git_commit,
    tracking_uri,
)

COMPLETE_TAG = "visreps.complete"
_PARAM_BATCH = 100
_METRIC_BATCH = 1000
_PARAM_VALUE_LIMIT = 6000


def client() -> MlflowClient:
    """An MlflowClient on the configured store (checked to be reachable)."""
    return MlflowClient(tracking_uri=ensure_tracking_available())


def experiment_id(name: str, mlflow_client: MlflowClient | None = None) -> str:
    """Id of experiment ``name``, created (with the embedded artifact folder) if absent."""
    mlflow_client = mlflow_client or client()
    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(existing.experiment_id)
        return existing.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=experiment_artifact_location(name))


@dataclass
class StageRun:
    """One MLflow run that a stage logs to; a thin, typed wrapper over the client."""

    run_id: str
    experiment_id: str
    mlflow_client: MlflowClient = field(repr=False)
    continued: bool = False  # True when this run continues an orphan of the same run key (a resumed training)

    @property
    def artifact_uri(self) -> str:
        return self.mlflow_client.get_run(self.run_id).info.artifact_uri

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        for start in range(0, len(items), _PARAM_BATCH):
            self.mlflow_client.log_batch(self.run_id, tags=items[start : start + _PARAM_BATCH])

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(str(k), _param_text(v)) for k, v in params.items()]
        for start in range(0, len(items), _PARAM_BATCH):
            self.mlflow_client.log_batch(self.run_id, params=items[start : start + _PARAM_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log finite numbers; a NaN or inf is an error here, never a silent hole in a curve."""
        timestamp = _now_ms()
        self._log_batch([_metric(key, value, timestamp, int(step or 0)) for key, value in metrics.items()])

    def log_metric_steps(self, key: str, values: Mapping[int, float]) -> None:
        """Log one metric at several steps (step -> value) in as few requests as possible; finite values only."""
        timestamp = _now_ms()
        self._log_batch([_metric(key, value, timestamp, int(step)) for step, value in values.items()])

    def _log_batch(self, items: list[Metric]) -> None:
        for start in range(0, len(items), _METRIC_BATCH):
            self.mlflow_client.log_batch(self.run_id, metrics=items[start : start + _METRIC_BATCH])

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self.mlflow_client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.mlflow_client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.mlflow_client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        self.mlflow_client.log_dict(self.run_id, data, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib or plotly figure (``.png`` / ``.html`` by the file name)."""
        self.mlflow_client.log_figure(self.run_id, figure, artifact_file)

    def log_table(self, table: Any, artifact_file: str) -> None:
        """Log a pandas DataFrame as ``.parquet``, ``.csv`` or ``.json`` (by the file name)."""
        suffix = Path(artifact_file).suffix
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / Path(artifact_file).name
            if suffix == ".parquet":
                table.to_parquet(local, index=False)
            elif suffix == ".csv":
                table.to_csv(local, index=False)
            elif suffix == ".json":
                local.write_text(table.to_json(orient="records"))
            else:
                raise ValueError(f"log_table: unsupported table file type {artifact_file!r} (.parquet, .csv, .json)")
            parent = str(Path(artifact_file).parent)
            self.log_artifact(local, None if parent == "." else parent)

    def download_artifacts(self, artifact_path: str, destination: str | Path | None = None) -> Path:
        return download_artifacts(self.run_id, artifact_path, destination)


def _metric(key: str, value: float, timestamp: int, step: int) -> Metric:
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"metric {key!r} is not finite ({value}) at step {step}; refusing to log it")
    return Metric(str(key), value, timestamp, step)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= _PARAM_VALUE_LIMIT else text[: _PARAM_VALUE_LIMIT - 3] + "..."


def _claim_launcher_run() -> str | None:
    """The run id `mlflow run` created for this process (taken once, so nested stages get their own runs)."""
    return os.environ.pop("MLFLOW_RUN_ID", None) or None


#: tags of the run `mlflow run` created that are copied when the stage logs into another experiment
_LAUNCHER_TAG_PREFIXES = ("mlflow.project.", "mlflow.source.", "mlflow.gitRepoURL", "mlflow.user")


def _open_run(mlflow_client: MlflowClient, experiment_name: str, identity: RunIdentity, run_name: str | None,
              parent_run_id: str | None, resume: bool) -> tuple[StageRun, list[Any]]:
    """The run to log to, and the orphans of the same run key it takes over (see ``visreps.tracking.identity``).

    Order: the run `mlflow run` created when it is in the configured experiment; else, with ``resume``, the newest
    orphan; else a new run. A launcher run in another experiment (MLflow's Default) is tagged with the id of the
    run that holds the results. A live run of the same key is an error: the same work must not run twice.
    """
    running = running_runs(mlflow_client, identity.key)
    live = [run for run in running if is_live(run.data.tags)]
    if live:
        raise RunInProgress(
            f"{identity.stage}: run {live[0].info.run_id} with the same configuration and inputs is in progress "
            f"({describe_live(live[0].data.tags)}); wait for it to finish, or stop that process and launch again")
    orphans = list(running)
    exp_id = experiment_id(experiment_name, mlflow_client)
    launcher = _claim_launcher_run()
    launcher_run = mlflow_client.get_run(launcher) if launcher else None
    if launcher_run is not None and launcher_run.info.experiment_id == exp_id:
        return StageRun(launcher, exp_id, mlflow_client), orphans
    if launcher_run is None and resume and orphans:
        return StageRun(orphans[0].info.run_id, exp_id, mlflow_client, continued=True), orphans[1:]
    tags = {"mlflow.runName": run_name} if run_name else {}
    if parent_run_id and mlflow_client.get_run(parent_run_id).info.experiment_id == exp_id:
        tags["mlflow.parentRunId"] = parent_run_id
    if launcher_run is not None:
        tags.update({key: value for key, value in launcher_run.data.tags.items()
                     if key.startswith(_LAUNCHER_TAG_PREFIXES)})
        tags["visreps.launcher_run_id"] = launcher
    created = mlflow_client.create_run(exp_id, run_name=run_name, tags=tags or None)
    if launcher_run is not None:
        mlflow_client.set_tag(launcher, "visreps.stage_run_id", created.info.run_id)
        mlflow_client.set_tag(launcher, "mlflow.runName", f"{identity.stage} -> {experiment_name}")
    return StageRun(created.info.run_id, exp_id, mlflow_client), orphans


@contextmanager
def stage_run(
    stage: str,
    config: ConfigModel,
    stage_version: int = 1,
    tags: dict[str, Any] | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    inputs: Mapping[str, str] | None = None,
    resume: bool = False,
    identifying: tuple[str, ...] = (),
) -> Iterator[StageRun]:
    """Start (or continue) the run of ``stage``; log config, params and tags; close it FINISHED or FAILED.

    The experiment is ``experiment``, else ``config.experiment`` if the config has one, else ``visreps-<stage>``.
    ``inputs`` (name -> fingerprint) are part of the run key; ``resume=True`` continues an orphaned run of the
    same key (``StageRun.continued``) instead of ending it as KILLED; ``identifying`` names the inputs that are part
    of the configuration key (see ``reusable_run``). ``visreps.complete`` is set only when the
    body returns without error; a heartbeat thread keeps ``visreps.heartbeat`` fresh while it runs.
    """
    mlflow_client = client()
    experiment_name = experiment or getattr(config, "experiment", None) or f"visreps-{stage}"
    identity = RunIdentity(stage, config, stage_version, dict(inputs or {}), identifying)
    run, orphans = _open_run(mlflow_client, experiment_name, identity, run_name, parent_run_id, resume)
    end_orphans(mlflow_client, orphans, run.run_id)
    all_tags = {
        "visreps.stage": stage,
        "visreps.stage_version": stage_version,
        "visreps.config_hash": config_hash(config),
        **identity.tags(),
        "visreps.git_commit": git_commit(),
        COMPLETE_TAG: "false",
        **owner_tags(),
        **(tags or {}),
    }
    if parent_run_id:
        all_tags["visreps.parent_run_id"] = parent_run_id
    if run.continued:
        previous = mlflow_client.get_run(run.run_id).data.tags.get(PID_TAG, "?")
        all_tags["visreps.continued_after_pid"] = previous
    run.set_tags(all_tags)
    run.log_params(flatten_config(config))
    run.log_text(to_yaml(config), "config.yaml")
    try:
        with Heartbeat(ensure_tracking_available(), run.run_id):
            yield run
    except KeyboardInterrupt:
        mlflow_client.set_terminated(run.run_id, "KILLED")
        raise
    except BaseException as error:
        run.set_tags({"visreps.error": f"{error.__class__.__name__}: {error}"[:5000]})
        mlflow_client.set_terminated(run.run_id, "FAILED")
        raise
    run.set_tags({COMPLETE_TAG: "true"})
    mlflow_client.set_terminated(run.run_id, "FINISHED")


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
        raise TrackingError(f"there is no experiment {experiment_name!r} on {tracking_uri()}; name the experiment "
                            "the evaluations were logged to")
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
    """Tags, params and latest metrics of run ``run_id``; TrackingError if it did not finish all its work."""
    run = client().get_run(run_id)
    if run.info.status != "FINISHED" or run.data.tags.get(COMPLETE_TAG) != "true":
        raise TrackingError(f"run {run_id} is {run.info.status} and not marked complete; re-run its stage")
    return _as_finished(run)


def download_artifacts(run_id: str, artifact_path: str, destination: str | Path | None = None) -> Path:
    """Download ``artifact_path`` of run ``run_id`` (to a temporary folder unless ``destination``); local path."""
    uri = ensure_tracking_available()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no progress bar
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path,
            dst_path=str(destination) if destination else None, tracking_uri=uri,
        )
    except MlflowException as error:
        raise TrackingError(f"run {run_id} has no artifact {artifact_path!r} ({str(error).splitlines()[0]})") from None
    return Path(local)
