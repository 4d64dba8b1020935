"""The only part of visreps that talks to MLflow: stores, stage runs, artifacts, the Model Registry.

``load_model(uri_or_path)``: a visreps network from ``models:/``, ``runs:/`` or a local file;
``resolve_model(spec)``: any model spec (those two, ``timm:<name>``, ``torchvision:<name>``) -> ``ResolvedModel``.
"""

from visreps.tracking.finished import (
    FinishedRun,
    complete_runs,
    find_finished_run,
    finished_run,
    newest_complete_run,
    reusable_run,
    stage_runs,
    supersede_finished,
)
from visreps.tracking.identity import run_key
from visreps.tracking.registry import load_model
from visreps.tracking.resolve import ResolvedModel, resolve_model
from visreps.tracking.runs import (
    COMPLETE_TAG,
    StageRun,
    client,
    download_artifacts,
    experiment_id,
    refuse_if_in_progress,
    stage_run,
)
from visreps.tracking.store import (
    RunInProgress,
    TrackingError,
    embedded_paths,
    ensure_tracking_available,
    git_commit,
    is_embedded,
    tracking_uri,
)

__all__ = [
    "COMPLETE_TAG",
    "FinishedRun",
    "ResolvedModel",
    "StageRun",
    "RunInProgress",
    "TrackingError",
    "client",
    "complete_runs",
    "download_artifacts",
    "embedded_paths",
    "ensure_tracking_available",
    "experiment_id",
    "find_finished_run",
    "finished_run",
    "newest_complete_run",
    "git_commit",
    "is_embedded",
    "load_model",
    "resolve_model",
    "refuse_if_in_progress",
    "reusable_run",
    "run_key",
    "stage_run",
    "stage_runs",
    "supersede_finished",
    "tracking_uri",
]
