"""Dashboard: the study's results (alignment vs K with CIs, baselines, ceilings, controls) in the browser.

Examples:
  visreps dashboard                                        # the embedded store, http://127.0.0.1:8050/
  visreps dashboard --tracking-uri http://127.0.0.1:5000 --port 8051

Runs ``dashboards/app.py`` (a Plotly Dash app over the tracking store's compare runs) in this terminal; Ctrl-C
stops it. It binds to 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default="", help="MLflow tracking server (default: the embedded store)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)


def run(args: argparse.Namespace) -> int:
    from visreps.paths import project_root

    command = [sys.executable, str(project_root() / "dashboards" / "app.py"), "--host", args.host,
               "--port", str(args.port)] + (["--tracking-uri", args.tracking_uri] if args.tracking_uri else [])
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0
