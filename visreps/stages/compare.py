"""Compare conditions over a set of evaluations: means over subjects and seeds with CIs, paired differences to
the reference (fine-label) and untrained networks with BH q-values, ranks with intervals, the coarseness figure.

Examples:
  visreps compare source_experiment=visreps-evaluate filters.dataset=nsd filters.analysis=rsa
  visreps compare 'run_ids=[<run id>,<run id>,...]' resampling=hierarchical
  mlflow run . -e compare -P overrides="source_experiment=visreps-pipeline filters.dataset=demo filters.analysis=rsa"

Evaluations are the complete evaluation parent runs of ``source_experiment`` carrying every tag of ``filters``
(keys without the ``visreps.`` prefix), or the runs ``run_ids``. All must be of one dataset and one analysis and
share test stimuli and resampling (paired tests); the statistics are ``compare_statistics``' (docs/method.md §7).
The compare run holds ``comparison.parquet``/``.csv``, ``answer.csv`` and ``figures/coarseness_<measure>.html``.
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Literal

import pandas as pd
from pydantic import Field

from visreps.config import StageConfig, runtime_field
from visreps.stages.common import add_config_arguments, stage_config
from visreps.stages.compare_controls import ControlsConfig, run_controls
from visreps.stages.compare_tables import LOGGED_TABLES, study_tables
from visreps.stages.compare_statistics import (
    MEASURES, REFERENCE, UNTRAINED, ComparisonError, Evaluation, compare_conditions, smallest_k_not_below,
)

STAGE = "compare"
STAGE_VERSION = 3  # 2: controls (reconstruction, stimulus subsets, ranking reliability), dimensionality, exports;
#                    3: per-subject scores, selection curves, training histories, evaluations' provenance
EVALUATE_STAGE = "evaluate"
#: the tables ``figure_set`` draws from
FIGURE_TABLES = ("comparison", "reconstruction", "dimensionality", "subjects", "selection", "training")


class CompareConfig(StageConfig):
    """Which evaluations, which reference, and how to resample (defaults in configs/compare/default.yaml)."""

    experiment: str = runtime_field("visreps-compare", description="MLflow experiment of the compare run")
    source_experiment: str = Field("visreps-evaluate", description="experiment holding the evaluation runs")
    filters: dict[str, str] = Field(default_factory=dict, description="tag -> value, e.g. dataset: nsd, analysis: rsa")
    run_ids: list[str] = Field(default_factory=list, description="evaluation parent runs (instead of the filters)")
    reference: dict[str, str] = Field(default_factory=lambda: {"label_source": "fine"},
                                      description="tags of the reference condition's runs")
    untrained: dict[str, str] = Field(default_factory=lambda: {"epoch": "0"},
                                      description="tags of the untrained networks' runs ({} = none)")
    resampling: Literal["auto", "stimuli", "subjects", "hierarchical"] = Field(
        "auto", description="auto: hierarchical from 5 subjects on, else stimuli (docs/method.md §7)")
    n_draws: int = Field(1000, ge=100, description="study-level draws (units subjects and hierarchical)")
    seed: int = Field(0, description="seed of the subject/seed draws")
    ci_level: float = Field(0.95, gt=0.0, lt=1.0)
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="FDR level of the 'below reference' calls")
    controls: ControlsConfig = Field(default_factory=ControlsConfig, description="visreps.stages.compare_controls")
    figure_formats: list[Literal["html", "png", "svg", "pdf"]] = runtime_field(
        ["html", "png", "svg", "pdf"], description="figure files (png/svg/pdf need kaleido and Chromium)")
    html_plotlyjs: Literal["inline", "cdn"] = runtime_field("inline", description="inline: HTML that opens offline")
    force: bool = runtime_field(False, description="compare again, replacing the result")


CONFIG_CLASS = CompareConfig


def _matches(tags: dict[str, str], wanted: dict[str, str]) -> bool:
    return bool(wanted) and all(tags.get(f"visreps.{key}") == str(value) for key, value in wanted.items())


def select_runs(config: CompareConfig) -> list:
    """The evaluation parent runs of ``config``: one clear error when none, or when they mix datasets/analyses."""
    from visreps.tracking import stage_runs

    runs, not_evaluations = stage_runs(EVALUATE_STAGE, config.source_experiment, config.filters, config.run_ids)
    if not_evaluations:
        raise ComparisonError(f"runs {', '.join(not_evaluations)} are not evaluation parent runs")
    if not runs:
        raise ComparisonError(f"no complete evaluation run in experiment {config.source_experiment!r} matches "
                              f"filters {config.filters or '{}'}; check the filters (tag values) or run `visreps evaluate`")
    for key in ("dataset", "analysis"):
        values = {}
        for run in runs:
            values.setdefault(run.tags.get(f"visreps.{key}"), []).append(run.run_id)
        if len(values) > 1:
            listed = "; ".join(f"{value}: {', '.join(ids[:3])}{' …' if len(ids) > 3 else ''}" for value, ids in values.items())
            raise ComparisonError(f"the evaluations are of more than one {key} ({listed}); compare one at a time, e.g. "
                                  f"filters.{key}={next(iter(values))}")
    models = {}
    for run in runs:
        models.setdefault(run.tags.get("visreps.weights_fingerprint"), []).append(run.run_id)
    repeated = [ids for ids in models.values() if len(ids) > 1]
    if repeated:
        raise ComparisonError(f"the same network was evaluated more than once (runs {', '.join(repeated[0])}); "
                              "narrow the filters or pass run_ids so that each network counts once")
    return runs


def _condition(run, config: CompareConfig) -> dict[str, object]:
    tags = run.tags
    architecture = tags.get("visreps.architecture", "?")
    k = tags.get("visreps.K")
    if _matches(tags, config.untrained):
        return {"role": UNTRAINED, "condition": f"untrained {architecture}", "label_source": "untrained", "K": None,
                "architecture": architecture}
    role = REFERENCE if _matches(tags, config.reference) else "condition"
    source = tags.get("visreps.label_source", "?")
    return {"role": role, "condition": f"{source} K={k} {architecture}", "label_source": source,
            "K": int(k) if k else None, "architecture": architecture}


def load_evaluations(runs: list, config: CompareConfig) -> list[Evaluation]:
    """Each run's tables; ComparisonError naming a run logged before evaluations kept their resamples."""
    from visreps.tracking import TrackingError, download_artifacts

    evaluations = []
    for run in runs:
        try:
            pairs = pd.read_csv(download_artifacts(run.run_id, "pairs.csv"), dtype={"subject": str, "region": str})
            boot = pd.read_parquet(download_artifacts(run.run_id, "bootstrap.parquet"))
        except (TrackingError, OSError):
            raise ComparisonError(f"evaluation run {run.run_id} has no pairs.csv/bootstrap.parquet (evaluated before "
                                  "evaluate stage version 3, or with n_bootstrap=0); evaluate it again") from None
        results = pd.read_parquet(download_artifacts(run.run_id, "results.parquet"))
        info = _condition(run, config)
        evaluations.append(Evaluation(run.run_id, str(info.pop("condition")), run.tags.get("visreps.seed", ""),
                                      results, pairs, boot, info))
    references = {e.condition for e in evaluations if e.info["role"] == REFERENCE}
    if len(references) > 1:
        raise ComparisonError(f"the reference tags {config.reference} match several conditions ({sorted(references)}); "
                              "make `reference` name one (e.g. add architecture)")
    return evaluations


def figure_set(tables: dict[str, pd.DataFrame], title: str) -> dict[str, object]:
    """A compare run's figures by file stem from its tables (``FIGURE_TABLES``; all but ``comparison`` may be
    empty or missing): coarseness, reconstruction and per-subject per measure; dimensionality, layer selection and
    training curves."""
    from visreps import figures as draw

    table, figures = tables["comparison"], {}

    def has(name: str, measure: str | None = None) -> bool:
        found = tables.get(name)
        return found is not None and len(found) > 0 and (measure is None or (found.measure == measure).any())

    for measure in MEASURES:
        if (table.measure == measure).any():
            figures[f"coarseness_{measure}"] = draw.coarseness_figure(table, measure, f"{title}: alignment vs K ({measure})")
        if has("reconstruction", measure):
            figures[f"reconstruction_{measure}"] = draw.reconstruction_figure(
                tables["reconstruction"], table, measure, f"{title}: PCA-reconstruction control ({measure})")
        if has("subjects", measure):
            figures[f"subjects_{measure}"] = draw.subject_figure(tables["subjects"], measure,
                                                                 f"{title}: alignment vs K per subject ({measure})")
    if has("dimensionality"):
        figures["dimensionality"] = draw.dimensionality_figure(tables["dimensionality"], f"{title}: effective dimensionality vs K")
    if has("selection"):
        figures["selection"] = draw.selection_figure(tables["selection"], f"{title}: layer selection (★ selected most often)")
    if has("training"):
        figures["training"] = draw.training_figure(tables["training"], f"{title}: training curves")
    return figures


def run_compare_stage(config: CompareConfig, parent_run_id: str | None = None) -> str:
    """Compare (or re-use the comparison of) the selected evaluations; returns the compare run id."""
    import tempfile

    from visreps.figures import export_figures
    from visreps.tracking import ensure_tracking_available, reusable_run, stage_run, supersede_finished

    ensure_tracking_available()
    runs = select_runs(config)
    inputs = {"evaluations": hashlib.sha256(",".join(sorted(r.run_id for r in runs)).encode()).hexdigest()[:16]}
    previous = reusable_run(STAGE, config, STAGE_VERSION, inputs, config.force)
    if previous is not None:
        return previous.run_id
    evaluations = load_evaluations(runs, config)
    statistics = {"unit": config.resampling, "n_draws": config.n_draws, "seed": config.seed,
                  "ci_level": config.ci_level, "alpha": config.alpha}
    table = compare_conditions(evaluations, **statistics)
    dataset, analysis = runs[0].tags.get("visreps.dataset"), runs[0].tags.get("visreps.analysis")
    tables = {"comparison": table, "answer": smallest_k_not_below(table),
              **study_tables(evaluations, {run.run_id: run.tags for run in runs}),
              **run_controls(evaluations, table, analysis, config.controls, statistics)}
    tags = {"visreps.dataset": dataset, "visreps.analysis": analysis, "visreps.n_evaluations": len(runs),
            "visreps.resampling": str(table.resampling.iloc[0])}
    with stage_run(STAGE, config, STAGE_VERSION, tags=tags, run_name=f"compare-{dataset}-{analysis}",
                   parent_run_id=parent_run_id, inputs=inputs) as run:
        for name, logged in tables.items():
            for artifact in LOGGED_TABLES[name] if len(logged) else ():
                run.log_table(logged, artifact)
        run.log_text("\n".join(r.run_id for r in runs), "evaluation_runs.txt")
        with tempfile.TemporaryDirectory() as folder:
            note = export_figures(figure_set(tables, f"{dataset} {analysis}"), folder, config.figure_formats,
                                  config.html_plotlyjs)
            run.log_artifacts(folder, "figures")
        if note:
            run.set_tags({"visreps.figures_note": note})
            print(f"compare: {note}")
    if config.force:
        supersede_finished(STAGE, config, STAGE_VERSION, inputs, run.run_id)
    return run.run_id


def answer_text(run_id: str) -> str:
    """The answer table of a compare run as text (the smallest K not significantly below the reference)."""
    from visreps.tracking import download_artifacts, finished_run

    answer = pd.read_csv(download_artifacts(run_id, "answer.csv"))
    tags = finished_run(run_id).tags
    head = f"{tags.get('visreps.dataset')} {tags.get('visreps.analysis')}: smallest K not significantly below the reference"
    return head + ("\n" + answer.to_string(index=False, float_format=lambda v: f"{v:.3g}") if len(answer)
                   else "\n  (every K is significantly below the reference)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    run_id = run_compare_stage(stage_config(CompareConfig, STAGE, args))
    print(answer_text(run_id))
    print(f"compare: run {run_id}")
    return 0
