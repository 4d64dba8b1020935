"""Figures of compare runs as files for papers: coarseness (raw, normalised), PCA reconstruction, effective
dimensionality, from the tables each compare run logged (the same figure functions as the compare run's own).

Examples:
  visreps figures --out paper/figures 'run_ids=[<compare run id>]'
  visreps figures --out paper/figures experiment=visreps-pipeline filters.dataset=demo formats=[pdf,svg]

Files: ``<out>/<dataset>_<analysis>_<run id[:8]>/<figure>.<format>``; HTML opens offline (plotly.js inline),
PNG/SVG/PDF need Kaleido and a Chromium (``apt-get install chromium``; without one the HTML is written and the
command says why). Reads the tracking store only; logs nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field

from visreps.config import ConfigModel
from visreps.errors import VisrepsError
from visreps.stages.common import add_config_arguments, stage_config

STAGE = "figures"
COMPARE_STAGE = "compare"


class FiguresConfig(ConfigModel):
    """Which compare runs and which files (defaults in configs/figures/default.yaml). Logs nothing to MLflow."""

    experiment: str = Field("visreps-compare", description="experiment holding the compare runs")
    run_ids: list[str] = Field(default_factory=list, description="compare runs (instead of experiment + filters)")
    filters: dict[str, str] = Field(default_factory=dict, description="tag -> value, e.g. dataset: nsd")
    out: str = Field("figures", description="folder the files are written to")
    formats: list[Literal["html", "png", "svg", "pdf"]] = Field(default_factory=lambda: ["html", "png", "svg", "pdf"])
    html_plotlyjs: Literal["inline", "cdn"] = "inline"


CONFIG_CLASS = FiguresConfig


class FiguresError(VisrepsError, ValueError):
    """The compare runs to draw cannot be found; the message says which and what to run."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", default="", help="output folder (same as out=DIR)")


def compare_runs(config: FiguresConfig) -> list:
    """The complete compare runs of ``config``; FiguresError when there is none."""
    from visreps.tracking import stage_runs

    runs, wrong = stage_runs(COMPARE_STAGE, config.experiment, config.filters, config.run_ids)
    if wrong:
        raise FiguresError(f"runs {', '.join(wrong)} are not compare runs; pass the runs `visreps compare` made")
    if not runs:
        raise FiguresError(f"no complete compare run in experiment {config.experiment!r} matches filters "
                           f"{config.filters or '{}'}; run `visreps compare` (or the pipeline) first, or pass run_ids")
    return runs


def run_tables(run_id: str) -> dict[str, pd.DataFrame]:
    """The tables a compare run logged that its figures are drawn from (empty frames for those it has none of)."""
    from visreps.stages.compare import FIGURE_TABLES
    from visreps.stages.compare_tables import compare_run_table

    tables = {name: compare_run_table(run_id, name) for name in FIGURE_TABLES}
    if tables["comparison"].empty:
        raise FiguresError(f"compare run {run_id} has no comparison table; run `visreps compare ... force=true` again")
    return tables


def write_figures(config: FiguresConfig) -> list[Path]:
    """Write every selected compare run's figures under ``config.out``; returns the files written."""
    from visreps.figures import export_figures
    from visreps.paths import ensure_writable_dir
    from visreps.stages.compare import figure_set

    out = ensure_writable_dir(Path(config.out).expanduser(), "out")
    written: list[Path] = []
    for run in compare_runs(config):
        dataset, analysis = run.tags.get("visreps.dataset", "?"), run.tags.get("visreps.analysis", "?")
        folder = out / f"{dataset}_{analysis}_{run.run_id[:8]}"
        note = export_figures(figure_set(run_tables(run.run_id), f"{dataset} {analysis}"), folder, config.formats,
                              config.html_plotlyjs)
        if note:
            print(f"figures: {note}")
        written += sorted(folder.iterdir())
    return written


def run(args: argparse.Namespace) -> int:
    config = stage_config(FiguresConfig, STAGE, args)
    if args.out:
        config = config.model_copy(update={"out": args.out})
    files = write_figures(config)
    print(f"figures: {len(files)} files under {Path(config.out).expanduser()}")
    return 0
