"""What a stage run does when the tracking store fails under it, and how two processes never open the same run.

- ``claim(uri, key)``: an exclusive lock (``fcntl.flock`` on a file in the system's temporary folder, one per
  user, tracking store and run key) held while a process looks for a live run of that key and opens its own, so two
  processes on one host started at the same moment cannot both start the same work (the second sees the first's
  live run and is refused with ``RunInProgress``). Across hosts the heartbeat tags do the same for runs that
  did not start within the same fraction of a second.
- ``server_lost(error)``: whether an MLflow error is a lost connection to the tracking server after MLflow's own
  retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``); ``lost_server_error``
  turns it into one ``TrackingError`` naming the server and the command to rerun.
- ``artifact_error``: an artifact that could not be written (full disk, read-only or unwritable folder, a server
  that refused the upload) as one ``TrackingError`` naming the artifact, the store and the fix.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from visreps.tracking.store import TrackingError, redact

LOCK_FOLDER = "visreps-locks"


class TrackingServerLost(TrackingError):
    """The tracking server stopped answering mid-stage for longer than MLflow retries; nothing more can be logged."""


@contextmanager
def claim(uri: str, key: str) -> Iterator[None]:
    """Hold this host's lock of run key ``key`` on store ``uri`` (waits for another holder; released on exit)."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: heartbeats alone keep runs apart
        yield
        return
    folder = Path(tempfile.gettempdir()) / f"{LOCK_FOLDER}-{os.getuid()}"
    name = hashlib.sha256(f"{uri}\n{key}".encode()).hexdigest()[:24]
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        handle = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:  # no usable temporary folder: heartbeats alone keep runs apart
        handle = None
    if handle is None:
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing the descriptor releases the lock


def server_lost(error: BaseException) -> bool:
    """True when ``error`` (an MLflow error) means the tracking server did not answer after MLflow's retries."""
    import requests

    from mlflow.exceptions import MlflowException

    if not isinstance(error, MlflowException):
        return False
    cause = error.__cause__ or error.__context__
    return isinstance(cause, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))


def rerun_command() -> str:
    """The command line of this process as a user would type it again (``visreps train ...``)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("visreps", "cli.py"):
        return shlex.join(["visreps", *argv[1:]])
    if argv and argv[0].endswith(".py"):
        return shlex.join([Path(sys.executable).name, *argv])
    return "the same command"


def _retry_settings() -> str:
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_MAX_RETRIES

    return (f"{MLFLOW_HTTP_REQUEST_MAX_RETRIES.name}={MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()}, "
            f"{MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.name}={MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()}")


def lost_server_error(uri: str, stage: str, run_id: str | None) -> TrackingServerLost:
    """The error a stage ends with when its tracking server went away for longer than MLflow retries."""
    run = f"run {run_id}" if run_id else "its run"
    return TrackingServerLost(
        f"lost the MLflow tracking server at {redact(uri)} during the {stage} stage ({run}); MLflow retried "
        f"({_retry_settings()}; raise them to ride out longer outages) and gave up. Nothing is marked complete. "
        f"Once the server answers again, rerun `{redact(rerun_command())}`: it re-uses or continues what was "
        "logged and redoes the rest")


def artifact_error(artifact: str, destination: str, run_id: str, error: BaseException) -> TrackingError:
    """The error for an artifact that could not be stored (``error``: an OSError or an MLflow error)."""
    if isinstance(error, OSError):
        reason = f"{error.strerror or error.__class__.__name__}" + (f" ({error.filename})" if error.filename else "")
    else:
        reason = str(error).splitlines()[0] if str(error) else error.__class__.__name__
    return TrackingError(
        f"cannot store artifact {artifact!r} of run {run_id} in {redact(destination)}: {redact(reason)}. "
        f"The run is marked FAILED, not complete. Free space in (or make writable) the artifact store, then rerun "
        f"`{redact(rerun_command())}`")
