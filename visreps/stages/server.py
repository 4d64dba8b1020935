"""Server: a shared MLflow tracking server for a lab (SQLite or PostgreSQL backend, artifact store, basic-auth).

Examples:
  visreps server                          # http://127.0.0.1:5000, SQLite and artifacts in <VISREPS_HOME>/server
  export MLFLOW_AUTH_ADMIN_PASSWORD=...   # first start with auth only; never a config key
  visreps server auth=true host=0.0.0.0 allowed_hosts=[mlflow.lab.org] \\
      backend_store_uri=postgresql://mlflow@db.lab.org:5432/mlflow artifacts_destination=/srv/mlflow/artifacts

Clients: ``MLFLOW_TRACKING_URI=http://<host>:5000`` with ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` (or ``MLFLOW_TRACKING_TOKEN``) in the environment; visreps reads credentials nowhere
else and logs none. Binds to 127.0.0.1 unless ``host=`` says otherwise. Users, permissions and backups: docs/lab.md.
Runs in this terminal (Ctrl-C stops it); logs nothing to MLflow itself.
"""

from __future__ import annotations

import argparse

from visreps.stages.common import add_config_arguments, stage_config
from visreps.tracking.server import ServerConfig, serve

STAGE = "server"
CONFIG_CLASS = ServerConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    serve(stage_config(ServerConfig, STAGE, args))  # replaces this process with `mlflow server`
    return 0
