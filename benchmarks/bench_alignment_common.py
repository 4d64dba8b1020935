"""Shared helpers of the alignment benchmarks: run each case in a fresh subprocess and report its figures.

A case prints one JSON line (its last stdout line) with at least ``seconds``; this module adds the child's
peak resident memory (``ru_maxrss``) and the resident memory it had before the measured work started
(``baseline_mb``: interpreter, libraries and input data), so ``peak_mb - baseline_mb`` is what the method
itself needed.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def current_rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), in MB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def report(figures: dict[str, Any]) -> None:
    """Print a case's figures as the last stdout line (called inside the child)."""
    figures["peak_mb"] = peak_rss_mb()
    print(json.dumps(figures), flush=True)


def run_case(script: str, case: str, *args: str, timeout: float = 1800) -> dict[str, Any]:
    """Run ``python script --case case args...`` in a fresh process; return its JSON figures."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    started = time.time()
    done = subprocess.run([sys.executable, script, "--case", case, *args], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["wall_with_startup_s"] = round(time.time() - started, 1)
    return figures


def machine_line() -> str:
    """CPU count and load, to print with every table (timings on a shared machine vary)."""
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
