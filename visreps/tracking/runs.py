"""Stage runs: start one (or continue the run `mlflow run` created), log to it, download its artifacts (finding an
identical finished run: ``visreps.tracking.finished``).

Every stage run carries the tags ``visreps.stage``, ``visreps.stage_version``, ``visreps.config_hash``, the
identity tags of ``visreps.tracking.identity`` (``visreps.config_key``, ``visreps.run_key`` = configuration +
input fingerprints, ``visreps.input.<name>``, owner and heartbeat), ``visreps.git_commit``; the resolved
configuration whole as ``config.yaml`` and flattened as params; and ``visreps.complete = true`` only once the
stage has finished all its work, so an interrupted run never looks finished. Every tag, param and text artifact
passes through ``redact``: a URL's password (a storage or tracking URI with ``user:password@``) is never logged.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from visreps.config import ConfigModel, config_hash, flatten_config, to_yaml
from visreps.tracking.faults import TrackingServerLost, artifact_error, claim, lost_server_error, server_lost
from visreps.tracking.identity import (
    PID_TAG,
    Heartbeat,
    RunIdentity,
    describe_live,
    end_orphans,
    is_live,
    owner_tags,
    running_runs,
)
from visreps.tracking.store import (
    RunInProgress,
    TrackingError,
    ensure_tracking_available,
    experiment_artifact_location,
    git_commit,
    redact,
    redact_data,
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
    try:
        return mlflow_client.create_experiment(name, artifact_location=experiment_artifact_location(name))
    except MlflowException:  # another process created it a moment ago (the name is unique in the store)
        existing = mlflow_client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


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
        items = [RunTag(str(k), redact(str(v))) for k, v in tags.items()]
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

    @contextmanager
    def _storing(self, artifact: str) -> Iterator[None]:
        """An artifact that cannot be written (full disk, read-only folder, refused upload) -> one TrackingError
        naming it and the store; a lost server is left to ``stage_run``."""
        import requests

        try:
            yield
        except (OSError, MlflowException, requests.exceptions.RequestException) as error:
            if server_lost(error):
                raise
            try:
                destination = self.artifact_uri
            except Exception:  # the store that holds the run cannot say either
                destination = "the artifact store"
            raise artifact_error(artifact, destination, self.run_id, error) from None

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        with self._storing(f"{artifact_path}/{Path(local_path).name}" if artifact_path else Path(local_path).name):
            self.mlflow_client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        with self._storing(artifact_path or Path(local_dir).name):
            self.mlflow_client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        with self._storing(artifact_file):
            self.mlflow_client.log_text(self.run_id, redact(text), artifact_file)

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        with self._storing(artifact_file):
            self.mlflow_client.log_dict(self.run_id, redact_data(data), artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib or plotly figure (``.png`` / ``.html`` by the file name)."""
        with self._storing(artifact_file):
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
    text = redact(json.dumps(value) if isinstance(value, (list, dict)) else str(value))
    return text if len(text) <= _PARAM_VALUE_LIMIT else text[: _PARAM_VALUE_LIMIT - 3] + "..."


def _claim_launcher_run() -> str | None:
    """The run id `mlflow run` created for this process (taken once, so nested stages get their own runs)."""
    return os.environ.pop("MLFLOW_RUN_ID", None) or None


#: tags of the run `mlflow run` created that are copied when the stage logs into another experiment
_LAUNCHER_TAG_PREFIXES = ("mlflow.project.", "mlflow.source.", "mlflow.gitRepoURL", "mlflow.user")


def _refuse_live(mlflow_client: MlflowClient, identity: RunIdentity) -> list[Any]:
    """RunInProgress when a live process works on a run of this key; else the orphans of the key (newest first)."""
    running = running_runs(mlflow_client, identity.key)
    live = [run for run in running if is_live(run.data.tags)]
    if live:
        raise RunInProgress(
            f"{identity.stage}: run {live[0].info.run_id} with the same configuration and inputs is in progress "
            f"({describe_live(live[0].data.tags)}); wait for it to finish, or stop that process and launch again")
    return list(running)


def refuse_if_in_progress(stage: str, config: ConfigModel, stage_version: int = 1,
                          inputs: Mapping[str, str] | None = None) -> None:
    """RunInProgress when a live process runs this stage run now (check before deleting files it may be using)."""
    uri = ensure_tracking_available()
    identity = RunIdentity(stage, config, stage_version, dict(inputs or {}))
    with claim(uri, identity.key):
        _refuse_live(MlflowClient(tracking_uri=uri), identity)


def _open_run(mlflow_client: MlflowClient, experiment_name: str, identity: RunIdentity, run_name: str | None,
              parent_run_id: str | None, resume: bool) -> tuple[StageRun, list[Any]]:
    """The run to log to, and the orphans of the same run key it takes over (see ``visreps.tracking.identity``).

    Order: the run `mlflow run` created when it is in the configured experiment; else, with ``resume``, the newest
    orphan; else a new run. A launcher run in another experiment (MLflow's Default) is tagged with the id of the
    run that holds the results. A live run of the same key is an error: the same work must not run twice.
    """
    orphans = _refuse_live(mlflow_client, identity)
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

    Faults (``visreps.tracking.faults``): the run is opened under a host-wide lock of its run key, so of two
    processes starting the same work at once the second gets ``RunInProgress``; an artifact that cannot be stored
    ends the run FAILED with one ``TrackingError``; a server that stops answering for longer than MLflow retries
    ends the stage with ``TrackingServerLost`` naming the server and the command to rerun (the run stays
    incomplete; the next launch continues or supersedes it).
    """
    uri = ensure_tracking_available()
    mlflow_client = MlflowClient(tracking_uri=uri)
    experiment_name = experiment or getattr(config, "experiment", None) or f"visreps-{stage}"
    identity = RunIdentity(stage, config, stage_version, dict(inputs or {}), identifying)
    run: StageRun | None = None
    try:
        with claim(uri, identity.key):
            run = _start(mlflow_client, experiment_name, identity, run_name, parent_run_id, resume, tags)
        run.log_params(flatten_config(config))
        run.log_text(to_yaml(config), "config.yaml")
        with Heartbeat(uri, run.run_id):
            yield run
        run.set_tags({COMPLETE_TAG: "true"})
        mlflow_client.set_terminated(run.run_id, "FINISHED")
    except KeyboardInterrupt:
        if run is not None:
            _end_quietly(mlflow_client, run, "KILLED")
        raise
    except BaseException as error:
        if isinstance(error, TrackingServerLost):
            raise
        if server_lost(error):
            raise lost_server_error(uri, stage, run.run_id if run else None) from None
        if run is not None:
            _end_quietly(mlflow_client, run, "FAILED", error)
        raise


def _end_quietly(mlflow_client: MlflowClient, run: StageRun, status: str, error: BaseException | None = None) -> None:
    """End ``run`` as ``status`` (with the error as ``visreps.error``); a store that cannot take it any more leaves
    the run RUNNING and incomplete, which the next launch recognises as an orphan: the first error is the story."""
    try:
        if error is not None:
            run.set_tags({"visreps.error": f"{error.__class__.__name__}: {error}"[:5000]})
        mlflow_client.set_terminated(run.run_id, status)
    except Exception:  # noqa: BLE001 (the error being raised already says what went wrong)
        return


def _start(mlflow_client: MlflowClient, experiment_name: str, identity: RunIdentity, run_name: str | None,
           parent_run_id: str | None, resume: bool, tags: dict[str, Any] | None) -> StageRun:
    """Open the run (``_open_run``), end the orphans it takes over, write the stage, identity and owner tags."""
    stage, config, stage_version = identity.stage, identity.config, identity.stage_version
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
    return run


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
