"""`visreps server`: real servers (basic-auth on SQLite, one per module; PostgreSQL), real HTTP requests, a real
stage run against the authenticated server, and everything that run logged searched for its credentials."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.conftest import REPO, free_port, stage_environment, stop_server, wait_for_health
from visreps.cli import main
from visreps.config import ConfigModel, runtime_field
from visreps.tracking import stage_run
from visreps.tracking.store import redact

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
TINY_DEMO = ["n_train_images=64", "image_size=32", "n_subjects=2", "n_train_stimuli_per_subject=40",
             "n_test_stimuli=30", "n_voxels=12", "n_images_per_concept=2", "behaviour_dims=4"]


def start_server(folder: Path, overrides: list[str], env: dict[str, str]) -> tuple[str, subprocess.Popen]:
    """`visreps server` on a free port (its own session, so the whole server is stopped at once)."""
    port = free_port()
    log = open(folder / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "visreps.cli", "server", f"port={port}", "workers=1",
                                *overrides], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process)
    except RuntimeError:
        stop_server(process)
        raise RuntimeError((folder / "server.log").read_text()[-3000:]) from None
    return url, process


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory):
    """(url, admin password): basic-auth on SQLite, backend and users in a temporary folder."""
    folder = tmp_path_factory.mktemp("auth_server")
    password = secrets.token_urlsafe(18)
    env = {**stage_environment(folder / "home"), "MLFLOW_AUTH_ADMIN_PASSWORD": password}
    url, process = start_server(folder, [f"backend_store_uri=sqlite:///{folder / 'mlflow.db'}",
                                         f"artifacts_destination={folder / 'artifacts'}", "auth=true"], env)
    yield url, password
    stop_server(process)


def post(url: str, endpoint: str, body: dict, user: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url + endpoint, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(user).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def as_user(monkeypatch: pytest.MonkeyPatch, url: str, username: str, password: str) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return MlflowClient(url)


def add_user(monkeypatch: pytest.MonkeyPatch, url: str, admin_password: str, username: str) -> str:
    import mlflow.server

    password = secrets.token_urlsafe(18)
    as_user(monkeypatch, url, "admin", admin_password)
    mlflow.server.get_app_client("basic-auth", tracking_uri=url).create_user(username, password)
    return password


@pytest.mark.slow
def test_unauthenticated_write_is_rejected_and_authenticated_accepted(auth_server) -> None:
    url, password = auth_server
    create = "/api/2.0/mlflow/experiments/create"
    assert post(url, create, {"name": "anonymous"}) == 401
    assert post(url, create, {"name": "wrong"}, ("admin", password + "x")) == 401
    assert post(url, create, {"name": "admin-experiment"}, ("admin", password)) == 200


@pytest.mark.slow
def test_user_without_permission_cannot_write(auth_server, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.server

    url, admin_password = auth_server
    colleague = add_user(monkeypatch, url, admin_password, "colleague")
    admin = as_user(monkeypatch, url, "admin", admin_password)
    auth = mlflow.server.get_app_client("basic-auth", tracking_uri=url)
    # READ granted; DENY (this MLflow's per-experiment "no permission"); no grant (the server's default: READ)
    readable, hidden, ungranted = (admin.create_experiment(name) for name in ("readable", "hidden", "ungranted"))
    auth.grant_user_permission("colleague", "experiment", readable, "READ")
    auth.grant_user_permission("colleague", "experiment", hidden, "DENY")
    client = as_user(monkeypatch, url, "colleague", colleague)
    assert client.get_experiment(readable).name == "readable"
    assert client.get_experiment(ungranted).name == "ungranted"
    for experiment in (readable, hidden, ungranted):
        with pytest.raises(MlflowException, match="403|Permission denied"):
            client.create_run(experiment)
    with pytest.raises(MlflowException, match="403|Permission denied"):
        client.get_experiment(hidden)
    own = client.create_experiment("colleague-own")  # a user may still write where they may
    assert client.create_run(own).info.status == "RUNNING"
    assert admin.search_runs([readable, hidden, ungranted]) == []


def logged_text(client: MlflowClient, run_id: str, folder: Path) -> str:
    """Every param, tag, metric name and the run name of ``run_id``, and the bytes of every artifact, as text."""
    run = client.get_run(run_id)
    parts = [json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(sorted(run.data.metrics)),
             run.info.run_name or ""]
    pending, files = [""], []
    while pending:
        for item in client.list_artifacts(run_id, pending.pop() or None):
            (pending if item.is_dir else files).append(item.path)
    assert files, "the run logged no artifact"
    for path in files:
        local = Path(client.download_artifacts(run_id, path, str(folder)))
        parts.append(local.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


@pytest.mark.slow
def test_stage_against_authenticated_server_logs_no_credential(auth_server, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    url, admin_password = auth_server
    password = add_user(monkeypatch, url, admin_password, "analyst")
    env = {**stage_environment(tmp_path / "home", url), "MLFLOW_TRACKING_USERNAME": "analyst",
           "MLFLOW_TRACKING_PASSWORD": password}
    done = subprocess.run([sys.executable, "-m", "visreps.cli", "demo_data", *TINY_DEMO, "experiment=lab"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    client = as_user(monkeypatch, url, "analyst", password)
    (run,) = client.search_runs([client.get_experiment_by_name("lab").experiment_id])
    assert run.data.tags["visreps.complete"] == "true"
    text = logged_text(client, run.info.run_id, tmp_path / "artifacts")
    assert "config.yaml" in json.dumps([a.path for a in client.list_artifacts(run.info.run_id)])
    assert password not in text and f"analyst:{password}" not in text
    assert admin_password not in text
    assert password not in done.stdout + done.stderr


class LeakyConfig(ConfigModel):
    """A configuration carrying a URL with a password, as a sweep's storage= may."""

    storage: str = "sqlite:///x.db"
    experiment: str = runtime_field("leak-tests")


@pytest.mark.slow
def test_urls_with_passwords_are_redacted_wherever_logged(auth_server, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """A tracking URI with user:password@ (which MLflow accepts) and a config value with one: the run logs
    neither password, in params, tags, config.yaml or the error of a failed stage."""
    url, admin_password = auth_server
    password = add_user(monkeypatch, url, admin_password, "urluser")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url.replace("http://", f"http://urluser:{password}@"))
    storage = f"postgresql://sweeper:{password}@db.invalid:5432/optuna"
    with pytest.raises(RuntimeError):
        with stage_run("leaky", LeakyConfig(storage=storage), tags={"visreps.storage": storage}) as run:
            run.log_dict({"storage": storage}, "plan.json")
            raise RuntimeError(f"cannot reach {storage} from {os.environ['MLFLOW_TRACKING_URI']}")
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert client.get_run(run.run_id).info.status == "FAILED"
    text = logged_text(client, run.run_id, tmp_path)
    assert password not in text
    assert "sweeper:***@db.invalid" in text and "urluser:***@127.0.0.1" in text  # redacted, not dropped


def test_redact_hides_passwords_only() -> None:
    assert redact("postgresql://u:p@ss@db:5432/x and http://a:b@h:5000/") == (
        "postgresql://u:***@db:5432/x and http://a:***@h:5000/")
    assert redact("postgresql://db/x?user=u&password=secret&sslmode=require") == (
        "postgresql://db/x?user=u&password=***&sslmode=require")
    for plain in ("postgresql://u@db/x", "sqlite:///mlflow.db", "http://127.0.0.1:5000", "visreps.complete"):
        assert redact(plain) == plain


def test_bad_server_settings_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VISREPS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    assert main(["server", "auth=true", f"port={free_port()}"]) == 2
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "short")
    assert main(["server", "auth=true", f"port={free_port()}"]) == 2
    assert "shorter than 12" in capsys.readouterr().err
    unreachable = "postgresql://someone:hunter2hunter2@127.0.0.1:1/none"
    assert main(["server", f"backend_store_uri={unreachable}"]) == 2
    err = capsys.readouterr().err
    assert "backend_store_uri" in err and "hunter2" not in err and "Traceback" not in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["server", f"port={taken.getsockname()[1]}"]) == 2
    assert "pick another port=" in capsys.readouterr().err


@pytest.fixture
def postgres_database():
    """A fresh PostgreSQL database (dropped afterwards); skips when no PostgreSQL answers on 127.0.0.1:5432."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES}: {error}")
    name = f"visreps_server_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.mark.slow
def test_server_on_postgresql_backend(postgres_database: str, tmp_path: Path) -> None:
    env = stage_environment(tmp_path / "home")
    url, process = start_server(tmp_path, [f"backend_store_uri={postgres_database}",
                                           f"artifacts_destination={tmp_path / 'artifacts'}"], env)
    try:
        client = MlflowClient(url)
        run = client.create_run(client.create_experiment("on-postgres"))
        client.log_metric(run.info.run_id, "loss", 0.5, step=3)
        client.log_text(run.info.run_id, "hello", "note.txt")
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(3, 0.5)]
        assert any(path.read_text() == "hello" for path in (tmp_path / "artifacts").rglob("note.txt"))
    finally:
        stop_server(process)
    import psycopg

    with psycopg.connect(postgres_database) as connection:  # the runs are in PostgreSQL, not in a file
        assert connection.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
