"""A shared MLflow tracking server for a lab: its configuration, the checks before it starts, its command line.

``serve(config)`` checks the backend store answers, the port is free and, with ``auth``, that the admin password
is in ``MLFLOW_AUTH_ADMIN_PASSWORD`` (MLflow's own variable, never a config key), writes MLflow's auth
configuration file (no secret in it), then replaces this process with ``mlflow server``. Nothing it prints carries
a password (``redact``). Users and permissions of the basic-auth app live in their own database (``auth_database_uri``).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field

from visreps.config import ConfigModel
from visreps.paths import PathError, ensure_writable_dir, home
from visreps.tracking.store import TrackingError, redact

ADMIN_PASSWORD_VARIABLE = "MLFLOW_AUTH_ADMIN_PASSWORD"
SECRET_KEY_VARIABLE = "MLFLOW_FLASK_SERVER_SECRET_KEY"
JOBS_VARIABLE = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
MIN_PASSWORD_LENGTH = 12  # MLflow's basic-auth refuses shorter passwords
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServerConfig(ConfigModel):
    """`visreps server` (defaults in configs/server/default.yaml). Holds no secret: passwords come from the
    environment. Empty paths default to ``<VISREPS_HOME>/server/``."""

    backend_store_uri: str = Field("", description="sqlite:///path/mlflow.db or postgresql://user@host:5432/db; "
                                                   "empty: sqlite:///<VISREPS_HOME>/server/mlflow.db")
    artifacts_destination: str = Field("", description="folder or URI holding the artifacts; empty: "
                                                       "<VISREPS_HOME>/server/artifacts")
    serve_artifacts: bool = Field(True, description="clients upload and download artifacts through the server; "
                                                    "false: clients write to artifacts_destination themselves")
    host: str = Field("127.0.0.1", description="interface to bind; 0.0.0.0 serves the whole network")
    port: int = Field(5000, ge=1, le=65535)
    workers: int = Field(2, ge=1, description="server worker processes")
    allowed_hosts: list[str] = Field(default_factory=list, description="Host headers accepted besides localhost "
                                                                       "and private addresses, e.g. mlflow.lab.org")
    auth: bool = Field(False, description="MLflow's basic-auth app: every request needs a user and a password")
    auth_database_uri: str = Field("", description="users and permissions; empty: basic_auth.db beside a SQLite "
                                                   "backend, else <VISREPS_HOME>/server/basic_auth.db")
    admin_username: str = Field("admin", description="created on the first start with MLFLOW_AUTH_ADMIN_PASSWORD")
    default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = Field(
        "READ", description="what a user may do on experiments and models they were given no permission on")
    auth_cache_s: int = Field(60, ge=0, description="seconds a checked password is remembered per worker (a check "
                                                   "costs 0.2-0.5 s of CPU: 0 caps a server at a few requests/s); "
                                                   "a changed password or removed user may work that long on other "
                                                   "workers; 0: check every request")
    background_jobs: bool = Field(False, description="MLflow's job runner (GenAI scoring, trace archival; about 7 "
                                                     "more processes); visreps uses none of it")


def server_folder() -> Path:
    return home() / "server"


def backend_uri(config: ServerConfig) -> str:
    return config.backend_store_uri or f"sqlite:///{server_folder() / 'mlflow.db'}"


def artifacts_location(config: ServerConfig) -> str:
    location = config.artifacts_destination or str(server_folder() / "artifacts")
    return location if "://" in location else str(Path(location).expanduser().resolve())


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]).expanduser() if uri.startswith("sqlite:///") else None


def auth_database(config: ServerConfig) -> str:
    if config.auth_database_uri:
        return config.auth_database_uri
    backend = _sqlite_path(backend_uri(config))
    folder = backend.resolve().parent if backend is not None else server_folder()
    return f"sqlite:///{folder / 'basic_auth.db'}"


def check_database(uri: str, what: str, key: str) -> None:
    """Open ``uri`` once (a SQLite file's folder is created); TrackingError naming ``key`` when it cannot be."""
    import sqlalchemy

    path = _sqlite_path(uri)
    if path is None and not uri.startswith(("postgresql", "mysql", "mssql")):
        raise TrackingError(f"{key}={redact(uri)} is not a database URI; use sqlite:///path/file.db or "
                            "postgresql://user@host:5432/database")
    try:
        if path is not None:
            ensure_writable_dir(path.resolve().parent, what)
        options = {"connect_args": {"connect_timeout": 5}} if uri.startswith("postgresql") else {}
        sqlalchemy.create_engine(uri, **options).connect().close()  # the database answers
    except PathError as error:
        raise TrackingError(str(error)) from None
    except Exception as error:  # driver errors: unreachable server, unknown database, missing driver
        raise TrackingError(f"cannot open the {what} {redact(uri)} ({key}): {type(error).__name__}: "
                            f"{redact(str(error).strip().splitlines()[0][:300])}; start the database, create it, "
                            f"or fix {key}=") from None


def check_port(host: str, port: int) -> None:
    """TrackingError when nothing can listen on ``host:port`` (bound as the server binds: address re-use on)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise TrackingError(f"cannot listen on {host}:{port} ({error.strerror}); pick another port= or "
                                "stop what uses it") from None


def check_admin_password(config: ServerConfig) -> None:
    """With ``auth``: the admin password is set (unless the admin already exists in a SQLite auth store) and
    long enough."""
    password = os.environ.get(ADMIN_PASSWORD_VARIABLE, "")
    existing = _sqlite_path(auth_database(config))
    if not password and (existing is None or not existing.is_file()):
        raise TrackingError(f"auth=true needs the admin's password in the environment variable "
                            f"{ADMIN_PASSWORD_VARIABLE} on the first start (at least {MIN_PASSWORD_LENGTH} "
                            "characters; it is never a config key), e.g. `read -s MLFLOW_AUTH_ADMIN_PASSWORD; export "
                            "MLFLOW_AUTH_ADMIN_PASSWORD`")
    if password and len(password) < MIN_PASSWORD_LENGTH:
        raise TrackingError(f"{ADMIN_PASSWORD_VARIABLE} is shorter than {MIN_PASSWORD_LENGTH} characters, which "
                            "MLflow's basic-auth refuses; choose a longer password")


def write_auth_config(config: ServerConfig) -> Path:
    """MLflow's basic-auth configuration (``MLFLOW_AUTH_CONFIG_PATH``); it holds no password."""
    folder = ensure_writable_dir(server_folder(), "server folder")
    path = folder / f"basic_auth-{config.port}.ini"
    path.write_text("[mlflow]\n"
                    f"default_permission = {config.default_permission}\n"
                    f"database_uri = {auth_database(config)}\n"
                    f"admin_username = {config.admin_username}\n"
                    f"auth_cache_ttl_seconds = {config.auth_cache_s}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return path


def server_command(config: ServerConfig) -> list[str]:
    """The `mlflow server` command line of ``config``."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri(config),
               "--host", config.host, "--port", str(config.port), "--workers", str(config.workers)]
    if config.serve_artifacts:
        command += ["--serve-artifacts", "--artifacts-destination", artifacts_location(config)]
    else:
        command += ["--no-serve-artifacts", "--default-artifact-root", artifacts_location(config)]
    if config.allowed_hosts:  # MLflow matches the Host header exactly (port included) or by wildcard
        hosts = ["localhost", "127.0.0.1", *config.allowed_hosts]
        command += ["--allowed-hosts", ",".join(h for host in hosts for h in (host, f"{host}:*"))]
    if config.auth:
        command += ["--app-name", "basic-auth"]
    return command


def describe(config: ServerConfig) -> str:
    """One line saying what is served where (no password in it)."""
    mode = (f"basic-auth (users in {redact(auth_database(config))}, admin {config.admin_username!r}, default "
            f"permission {config.default_permission})" if config.auth else "no authentication")
    return (f"MLflow tracking server on http://{config.host}:{config.port} ({config.workers} workers): backend "
            f"{redact(backend_uri(config))}, artifacts {redact(artifacts_location(config))}"
            f"{' (served)' if config.serve_artifacts else ' (clients write there directly)'}, {mode}")


def serve(config: ServerConfig) -> None:
    """Check everything, then replace this process with `mlflow server` (never returns)."""
    check_database(backend_uri(config), "backend store", "backend_store_uri")
    check_port(config.host, config.port)
    environment = dict(os.environ)
    environment.setdefault(JOBS_VARIABLE, str(config.background_jobs).lower())
    if config.auth:
        check_admin_password(config)
        check_database(auth_database(config), "auth database", "auth_database_uri")
        environment["MLFLOW_AUTH_CONFIG_PATH"] = str(write_auth_config(config))
        # CSRF key of the auth app: shared by this server's workers; set it yourself to share it between servers
        environment.setdefault(SECRET_KEY_VARIABLE, secrets.token_hex(32))
    if "://" not in artifacts_location(config):
        try:
            ensure_writable_dir(artifacts_location(config), "artifacts_destination")
        except PathError as error:
            raise TrackingError(str(error)) from None
    if config.host not in LOOPBACK_HOSTS and not config.auth:
        print(f"visreps server: warning: serving {config.host} without auth: anyone who reaches port {config.port} "
              "can read and write every run; add auth=true", file=sys.stderr)
    print(f"visreps server: {describe(config)}", flush=True)
    command = server_command(config)
    os.execve(command[0], command, environment)
