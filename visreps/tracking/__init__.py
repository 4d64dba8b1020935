"""The only part of visreps that talks to MLflow: stores, stage runs, artifacts, the Model Registry."""

from visreps.tracking.identity import run_key
from visreps.tracking.runs import (
    COMPLETE_TAG,
    FinishedRun,
    StageRun,
    client,
    download_artifacts,
    experiment_id,
    find_finished_run,
    finished_run,
    reusable_run,
    stage_run,
)
from visreps.tracking.store import (
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
    "StageRun",
    "TrackingError",
    "client",
    "download_artifacts",
    "embedded_paths",
    "ensure_tracking_available",
    "experiment_id",
    "find_finished_run",
    "finished_run",
    "git_commit",
    "is_embedded",
    "reusable_run",
    "run_key",
    "stage_run",
    "tracking_uri",
]
