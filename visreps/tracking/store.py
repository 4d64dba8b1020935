"""Which MLflow tracking store to use, and checking it answers before any long work starts.

Default: an embedded SQLite store ``<home>/mlflow.db`` with artifacts in ``<home>/mlartifacts`` (``home()`` is
``VISREPS_HOME`` or ``<project>/.visreps``). ``MLFLOW_TRACKING_URI`` selects a real server (``http://...``) or
another database (``postgresql://...``). Credentials come only from MLflow's own environment variables
(``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` / ``MLFLOW_TRACKING_TOKEN``, read by MLflow's client) or
a URI's ``user:password@``; ``redact`` keeps them out of everything visreps prints or logs.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Any

from visreps.errors import VisrepsError
from visreps.paths import PathError, ensure_writable_dir, home, project_root


#: ``scheme://user:password@``: the password runs to the last ``@`` before the path (an unencoded ``@`` in it too)
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^\s:/@]*):([^\s/]*)@")
_QUERY_SECRET = re.compile(r"([?&](?:password|token|secret)=)[^&\s]+", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (``scheme://user:***@host``,
    ``?password=***``): what visreps prints, tags, logs as params or artifacts never carries a credential."""
    text = _URL_CREDENTIALS.sub(lambda match: f"{match[1]}{match[2]}:***@", text)
    return _QUERY_SECRET.sub(r"\1***", text)


def redact_data(data: Any) -> Any:
    """``data`` (nested dicts, lists and tuples) with ``redact`` applied to every string in it."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {key: redact_data(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(value) for value in data]
    return data


def without_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` part."""
    return _URL_CREDENTIALS.sub(lambda match: match[1], url)


class TrackingError(VisrepsError, RuntimeError):
    """The tracking store cannot be reached or used; the message says which and how to fix it."""


class RunInProgress(TrackingError):
    """Another live process is running the same stage run (same configuration and inputs)."""


def embedded_paths() -> tuple[Path, Path]:
    """(SQLite database file, artifact folder) of the embedded store."""
    base = home()
    return base / "mlflow.db", base / "mlartifacts"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store's URI."""
    configured = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if configured:
        return configured
    database, _ = embedded_paths()
    return f"sqlite:///{database}"


def is_embedded(uri: str) -> bool:
    """True when ``uri`` is the embedded store that visreps manages itself."""
    database, _ = embedded_paths()
    return uri == f"sqlite:///{database}"


def _check_http_server(uri: str, timeout_s: float) -> None:
    url = without_credentials(uri).rstrip("/") + "/health"  # /health needs no login, even with basic-auth
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback or configured server)
            if response.status != 200:
                raise OSError(f"HTTP {response.status}")
    except (OSError, urllib.error.URLError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(
            f"the MLflow tracking server at {redact(uri)} (MLFLOW_TRACKING_URI) is unreachable: {reason}. "
            "Start it (e.g. `mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlflow.db`), "
            "fix the address, or unset MLFLOW_TRACKING_URI to use the embedded store."
        ) from None


#: http(s) servers that answered this process once: a later failure to answer is an outage, waited out
_ANSWERED: set[str] = set()


def outage_wait_s() -> float:
    """How long MLflow's client retries a request (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` backoffs of
    ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` x 2^i s, each at most 120 s): what a restarting server is given."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_MAX_RETRIES

    factor, retries = MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(), MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    return float(sum(min(factor * 2 ** index, 120) for index in range(max(0, retries))))


def _server_answers(uri: str, timeout_s: float) -> None:
    """First contact fails fast; a server that answered before is polled for ``outage_wait_s`` (a restart)."""
    if uri not in _ANSWERED:
        _check_http_server(uri, timeout_s)
        _ANSWERED.add(uri)
        return
    deadline = time.monotonic() + outage_wait_s()
    while True:
        try:
            _check_http_server(uri, timeout_s)
            return
        except TrackingError as error:
            if time.monotonic() >= deadline:
                raise TrackingError(f"{error} (it answered earlier in this process; waited {outage_wait_s():.0f} s "
                                    "for it to come back)") from None
            time.sleep(1.0)


@lru_cache(maxsize=8)
def _initialise_database(uri: str, artifact_root: str | None) -> None:
    """Create the tables (and the Default experiment with our artifact root) once per process."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # MLflow announces table creation and migrations at INFO on stderr; stage output stays ours
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    SqlAlchemyStore(uri, artifact_root or str(Path.cwd() / "mlartifacts"))


def ensure_tracking_available(timeout_s: float = 10.0) -> str:
    """Check the tracking store answers (creating the embedded one if needed); return its URI.

    Raises TrackingError naming the URI and the fix. Call at the very start of a stage.
    """
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        _server_answers(uri, timeout_s)
        return uri
    if uri.startswith("file:") or "://" not in uri:
        raise TrackingError(
            f"MLFLOW_TRACKING_URI={redact(uri)!r} is a file store, which MLflow 3 refuses; use a server URL "
            "(http://host:port) or a database URI (sqlite:///path/mlflow.db, postgresql://...)."
        )
    artifact_root = None
    if is_embedded(uri):
        try:
            database, artifacts = embedded_paths()
            ensure_writable_dir(database.parent, "embedded tracking store")
            artifact_root = str(ensure_writable_dir(artifacts, "embedded artifact store"))
        except PathError as error:
            raise TrackingError(str(error)) from None
    try:
        _initialise_database(uri, artifact_root)
    except Exception as error:  # SQLAlchemy/driver errors: name the store, not the stack
        raise TrackingError(
            f"cannot open the tracking database {redact(uri)}: {error.__class__.__name__}: "
            f"{redact(str(error).splitlines()[0])}. "
            "Check that the database server runs and the URI is right, or unset MLFLOW_TRACKING_URI."
        ) from None
    return uri


def experiment_artifact_location(experiment_name: str) -> str | None:
    """Artifact folder URI for a new experiment in a SQLite store: ``<database folder>/mlartifacts/<name>``, so
    artifacts sit beside the database whatever the working directory (MLflow's default is ``./mlruns`` of the
    process that creates the experiment). None for a server, which decides itself."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    artifacts = Path(uri[len("sqlite:///"):]).expanduser().resolve().parent / "mlartifacts"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in experiment_name)
    return (artifacts / safe).as_uri()


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The project's git commit (suffixed ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        root = project_root()
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError, VisrepsError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
