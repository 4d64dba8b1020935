"""Test-wide isolation: every test session gets its own visreps home (embedded tracking store, caches),
so no test ever writes into the project's store; `mlflow_server` starts a real tracking server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def isolated_visreps_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VISREPS_HOME in a temporary folder for the whole session; the real tracking URI is never used."""
    home = tmp_path_factory.mktemp("visreps_home")
    saved = {key: os.environ.get(key) for key in ("VISREPS_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    os.environ["VISREPS_HOME"] = str(home)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_RUN_ID", None)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A fresh VISREPS_HOME (embedded SQLite store) for one test module; its MlflowClient."""
    from mlflow import MlflowClient

    from visreps.tracking import tracking_uri

    patch = pytest.MonkeyPatch()
    patch.setenv("VISREPS_HOME", str(tmp_path_factory.mktemp("module_home")))
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield MlflowClient(tracking_uri=tracking_uri())
    patch.undo()


def rewrite_at_same_size(image: Path) -> None:
    """Change one pixel of a PNG and write it back with exactly its old size in bytes (zero padding after the
    image end, which readers ignore): only the content and the modification time differ."""
    import io

    import numpy as np
    from PIL import Image

    size = image.stat().st_size
    pixels = np.asarray(Image.open(image).convert("RGB")).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG", optimize=True)
    data = encoded.getvalue()
    assert len(data) <= size, "the re-encoded image is larger than the original; pick another image"
    image.write_bytes(data + b"\0" * (size - len(data)))
    assert image.stat().st_size == size
    assert (np.asarray(Image.open(image).convert("RGB")) == pixels).all()


def stage_environment(home: Path, tracking_uri: str | None = None) -> dict[str, str]:
    """Environment for a visreps subprocess: its own VISREPS_HOME, this interpreter first on PATH, no inherited
    tracking URI or `mlflow run` run id (``tracking_uri`` sets one)."""
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    env.update(VISREPS_HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM a server started with ``start_new_session=True`` and its workers (its process group); SIGKILL
    them if they have not stopped within 30 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def wait_for_health(url: str, process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited early with status {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server at {url} did not answer within {timeout_s:.0f} s")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real `mlflow server` on 127.0.0.1 (free port, temporary SQLite backend and artifact folder)."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    log = open(folder / "server.log", "w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", str(folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
