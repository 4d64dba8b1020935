"""The tracking layer under a sweep's logging rate: 8 worker processes logging metrics and artifacts to one real
server at once, every metric counted back afterwards (benchmarks/bench_tracking_load.py, lean)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, stage_environment


@pytest.mark.slow
def test_eight_workers_lose_no_metric(mlflow_server: str, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_tracking_load.py"), "--tracking-uri",
                           mlflow_server, "--workers", "8", "--seconds", "3", "--no-reference", "--json", str(out)],
                          cwd=REPO, env=stage_environment(tmp_path / "home"), capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["workers"] == 8 and row["failed_calls"] == 0, row
    assert row["metrics_logged"] >= 8 * len(("loss", "accuracy", "lr", "grad_norm", "selection_score")), row
    assert row["lost_metrics"] == 0 and row["extra_metrics"] == 0 and row["lost_artifacts"] == 0, row
