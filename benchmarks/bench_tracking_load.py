"""Load on one tracking server: N worker processes logging like sweep trials, then every metric counted back.

Starts ``visreps server`` (SQLite backend in a temporary folder, or a fresh database on ``--backend
postgresql://...``, dropped afterwards) unless ``--tracking-uri`` names a running server. Each worker is its own
process (forked, so none pays the import again) holding one visreps stage run (``visreps.tracking.stage_run``,
the path every stage logs through; MLflow's HTTP client retries transient errors underneath it) and, for
``--seconds`` after all workers are ready, repeats a training step's logging:

- every step: ``log_metrics`` of 5 metrics at that step (one request);
- every 10th step: ``log_metric_steps`` of a 100-point curve (one ``log_batch`` request);
- every 10th step: a small text artifact (one upload).

A call counts as logged only when it returned; one that raised (after MLflow's retries) counts as failed. Then
every run's metric histories and artifacts are read back from the server: **lost** = logged but absent,
**extra** = present but never reported logged. Printed per phase: metrics/s, requests/s, artifacts/s, latency of
a logging request (median and 95th percentile), lost, extra, failed. The reference phase is one worker alone.

  python benchmarks/bench_tracking_load.py [--workers 8] [--seconds 20] [--backend sqlite|postgresql://...]
      [--server-workers 2] [--auth-cache-s S] [--tracking-uri http://...] [--no-reference] [--json result.json]

``--auth-cache-s S`` starts the server with basic-auth (``auth_cache_s=S``) and the workers log in as its admin.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STEP_KEYS = ("loss", "accuracy", "lr", "grad_norm", "selection_score")
CURVE_EVERY, CURVE_POINTS, ARTIFACT_EVERY = 10, 100, 10
EXPERIMENT = "visreps-load"


def worker(index: int, phase: str, seconds: float, barrier: Any, results: Any) -> None:
    """One process: a stage run, then ``seconds`` of logging; puts its counts on ``results``."""
    from visreps.config import ConfigModel, runtime_field
    from visreps.tracking import stage_run

    class LoadConfig(ConfigModel):
        phase: str
        worker: int
        experiment: str = runtime_field(EXPERIMENT)

    logged: dict[str, int] = {}
    counts = {"worker": index, "requests": 0, "artifacts": 0, "failed": 0, "errors": [], "latencies": []}

    def timed(call, *args, **kwargs) -> bool:
        started = time.perf_counter()
        try:
            call(*args, **kwargs)
        except Exception as error:  # counted, not fatal: the point is to see what did not arrive
            counts["failed"] += 1
            counts["errors"].append(f"{type(error).__name__}: {str(error)[:200]}")
            return False
        counts["latencies"].append(time.perf_counter() - started)
        counts["requests"] += 1
        return True

    with stage_run("load", LoadConfig(phase=phase, worker=index), run_name=f"{phase}-w{index}") as run:
        barrier.wait(timeout=600)
        deadline, step = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            step += 1
            values = {key: float(step % 97) / (rank + 1) for rank, key in enumerate(STEP_KEYS)}
            if timed(run.log_metrics, values, step=step):
                for key in STEP_KEYS:
                    logged[key] = logged.get(key, 0) + 1
            if step % CURVE_EVERY == 0:
                curve = {step * CURVE_EVERY + k: k / CURVE_POINTS for k in range(CURVE_POINTS)}
                if timed(run.log_metric_steps, "curve", curve):
                    logged["curve"] = logged.get("curve", 0) + CURVE_POINTS
            if step % ARTIFACT_EVERY == 0 and timed(run.log_text, f"worker {index} step {step}\n",
                                                    f"notes/step_{step:06d}.txt"):
                counts["artifacts"] += 1
    results.put({**counts, "run_id": run.run_id, "logged": logged, "steps": step})


def run_phase(tracking_uri: str, phase: str, n_workers: int, seconds: float) -> list[dict[str, Any]]:
    """Fork ``n_workers`` workers, release them together, collect what each says it logged."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(n_workers), context.Queue()
    processes = [context.Process(target=worker, args=(i, phase, seconds, barrier, results)) for i in range(n_workers)]
    for process in processes:
        process.start()
    reports = [results.get(timeout=600 + seconds) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        if process.exitcode != 0:
            raise RuntimeError(f"worker process {process.pid} ended with status {process.exitcode}")
    return sorted(reports, key=lambda report: report["worker"])


def count_on_server(tracking_uri: str, report: dict[str, Any]) -> dict[str, int]:
    """Metric points per key and artifacts of one worker's run, as the server has them."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = {key: len(client.get_metric_history(report["run_id"], key)) for key in report["logged"]}
    found["artifacts"] = len(client.list_artifacts(report["run_id"], "notes"))
    return found


def percentile_ms(sorted_seconds: list[float], quantile: float) -> float:
    if not sorted_seconds:
        return float("nan")
    return sorted_seconds[min(len(sorted_seconds) - 1, int(quantile * len(sorted_seconds)))] * 1000


def create_experiment(tracking_uri: str, name: str) -> None:
    """Create the workers' experiment once, before they start (eight creating it at once would race); plain HTTP,
    so that no MLflow client connection exists in the process the workers are forked from."""
    request = urllib.request.Request(f"{tracking_uri}/api/2.0/mlflow/experiments/create", method="POST",
                                     data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"})
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        login = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as error:
        if "RESOURCE_ALREADY_EXISTS" not in error.read().decode(errors="replace"):
            raise


def summarise(tracking_uri: str, phase: str, seconds: float, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates, latency and the lost / extra counts of one phase."""
    lost = extra = logged_total = 0
    lost_artifacts = 0
    for report in reports:
        found = count_on_server(tracking_uri, report)
        for key, count in report["logged"].items():
            lost += max(0, count - found[key])
            extra += max(0, found[key] - count)
            logged_total += count
        lost_artifacts += max(0, report["artifacts"] - found["artifacts"])
    latencies = sorted(latency for report in reports for latency in report["latencies"])
    return {
        "phase": phase, "workers": len(reports), "seconds": seconds, "metrics_logged": logged_total,
        "artifacts_logged": sum(report["artifacts"] for report in reports),
        "requests": sum(report["requests"] for report in reports),
        "metrics_per_s": logged_total / seconds, "requests_per_s": sum(r["requests"] for r in reports) / seconds,
        "artifacts_per_s": sum(report["artifacts"] for report in reports) / seconds,
        "latency_ms_p50": percentile_ms(latencies, 0.5), "latency_ms_p95": percentile_ms(latencies, 0.95),
        "lost_metrics": lost, "extra_metrics": extra,
        "lost_artifacts": lost_artifacts, "failed_calls": sum(report["failed"] for report in reports),
        "errors": sorted({error for report in reports for error in report["errors"]})[:5],
    }


def start_server(folder: Path, backend: str, server_workers: int, auth_cache_s: int | None
                 ) -> tuple[str, subprocess.Popen]:
    """``visreps server`` on a free port with ``backend`` (basic-auth unless ``auth_cache_s`` is None, the
    workers logging in as its admin); waits for /health."""
    sys.path.insert(0, str(REPO))
    from tests.conftest import free_port, wait_for_health

    port = free_port()
    log = open(folder / "server.log", "w")
    env = {**os.environ, "VISREPS_HOME": str(folder / "home"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    auth = []
    if auth_cache_s is not None:
        password = secrets.token_urlsafe(18)
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
        os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password)
        auth = ["auth=true", f"auth_cache_s={auth_cache_s}"]
    process = subprocess.Popen([sys.executable, "-m", "visreps.cli", "server", f"backend_store_uri={backend}",
                                f"artifacts_destination={folder / 'artifacts'}", f"port={port}",
                                f"workers={server_workers}", *auth], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for_health(url, process, timeout_s=180)
    return url, process


def fresh_postgres_database(admin_url: str) -> tuple[str, Any]:
    """(URL of a new database on the server of ``admin_url``, a function dropping it)."""
    import psycopg

    base = admin_url.rstrip("/").rsplit("/", 1)[0] if admin_url.count("/") > 2 else admin_url.rstrip("/")
    name = f"visreps_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return f"{base}/{name}", drop


def print_table(rows: list[dict[str, Any]], label: str) -> None:
    print(f"\ntracking load ({label})")
    header = (f"{'phase':<10} {'workers':>7} {'metrics/s':>10} {'requests/s':>10} {'artifacts/s':>11} "
              f"{'p50 ms':>7} {'p95 ms':>7} {'logged':>8} {'lost':>5} {'extra':>5} {'lost art.':>9} {'failed':>6}")
    print(header)
    for row in rows:
        print(f"{row['phase']:<10} {row['workers']:>7} {row['metrics_per_s']:>10.0f} {row['requests_per_s']:>10.1f} "
              f"{row['artifacts_per_s']:>11.2f} {row['latency_ms_p50']:>7.1f} {row['latency_ms_p95']:>7.1f} "
              f"{row['metrics_logged']:>8} {row['lost_metrics']:>5} {row['extra_metrics']:>5} "
              f"{row['lost_artifacts']:>9} {row['failed_calls']:>6}")
        for error in row["errors"]:
            print(f"    error: {error}")


def measure(tracking_uri: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every phase first (forked from a process without an MLflow connection), then the counting."""
    phases = ([("reference", 1)] if args.reference else []) + [("load", args.workers)]
    tag = uuid.uuid4().hex[:6]  # a new run key per invocation: runs of an earlier invocation are never reused
    create_experiment(tracking_uri, EXPERIMENT)
    reports = []
    for name, n in phases:
        started = time.monotonic()
        reports.append(run_phase(tracking_uri, f"{name}-{tag}", n, args.seconds))
        print(f"{name}: {n} workers, {time.monotonic() - started:.1f} s from fork to the last report", flush=True)
    started = time.monotonic()
    rows = [summarise(tracking_uri, name, args.seconds, report) for (name, _), report in zip(phases, reports)]
    print(f"counted everything back in {time.monotonic() - started:.1f} s", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backend", default="sqlite", help="sqlite, or postgresql://user@host:port (a fresh "
                                                            "database is created there and dropped afterwards)")
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument("--auth-cache-s", type=int, default=None, help="start the server with basic-auth and this "
                                                                        "auth_cache_s (default: no auth)")
    parser.add_argument("--tracking-uri", default="", help="log to this running server instead of starting one")
    parser.add_argument("--no-reference", dest="reference", action="store_false", help="skip the 1-worker phase")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import visreps.tracking  # noqa: F401  (imported once here; the forked workers inherit it)

    with tempfile.TemporaryDirectory(prefix="visreps-load-") as folder:
        os.environ.setdefault("VISREPS_HOME", str(Path(folder) / "client-home"))
        if args.tracking_uri:
            rows, label = measure(args.tracking_uri, args), f"server {args.tracking_uri}"
        else:
            drop = None
            if args.backend == "sqlite":
                backend = f"sqlite:///{Path(folder) / 'mlflow.db'}"
            else:
                backend, drop = fresh_postgres_database(args.backend)
            url, server = start_server(Path(folder), backend, args.server_workers, args.auth_cache_s)
            try:
                rows = measure(url, args)
            finally:
                os.killpg(server.pid, 15)
                server.wait(timeout=60)
                if drop:
                    drop()
            label = f"{'SQLite' if drop is None else 'PostgreSQL'} backend, {args.server_workers} server workers"
            if args.auth_cache_s is not None:
                label += f", basic-auth (auth_cache_s={args.auth_cache_s})"
    print_table(rows, label)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if all(row["lost_metrics"] == 0 and row["lost_artifacts"] == 0 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
