"""What evaluation runs hold in MLflow (docs/evaluation.md): a child run per (subject, region), a parent run per
(model, dataset, analysis) with the tidy table of every result and per-region aggregates over subjects."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from visreps.stages.evaluate_pair import PairResult
from visreps.tracking import StageRun, download_artifacts

RESULTS_TABLE = "results.parquet"
DIMENSIONALITY_TABLE = "effective_dimensionality.csv"
BOOTSTRAP_TABLE = "bootstrap.parquet"
PAIRS_TABLE = "pairs.csv"
TEST_STIMULI_TABLE = "test_stimuli.csv"
PAIR_SELECTION_TABLE = "selection.csv"
SELECTION_TABLE = "selection.parquet"
#: metrics aggregated over subjects in the parent run
AGGREGATED = ("score", "score_normalised", "noise_ceiling")


def _metric_name(*parts: str) -> str:
    """An MLflow-safe metric name from parts joined by dots (letters, digits, _ - . / only)."""
    return ".".join("".join(ch if ch.isalnum() or ch in "_-/" else "_" for ch in part) for part in parts)


def log_pair(run: StageRun, result: PairResult) -> None:
    """Selected point, score, CI, ceiling, normalised score, selection curve, bootstrap distribution, tables."""
    best = result.selection.best_layer
    run.set_tags({"visreps.selected_point": best})
    run.log_params({"selected_point": best, "n_test_stimuli": len(result.test_ids),
                    **{f"selection.{key}": value for key, value in result.selection.details.items()}})
    run.log_metrics(result.metrics)
    run.log_metric_steps("selection_curve", {index: result.selection.scores[point] for index, point in
                                             enumerate(result.points) if point in result.selection.scores})
    run.log_table(result.selection_table(), PAIR_SELECTION_TABLE)
    run.log_table(pd.DataFrame(result.tidy_rows()), RESULTS_TABLE)
    run.log_table(pd.DataFrame({"stimulus": result.test_ids}), TEST_STIMULI_TABLE)
    run.log_text(json.dumps(result.result.to_dict(), indent=2, default=float), "result.json")
    boot = result.bootstrap_table()
    if boot is not None:
        run.log_table(boot, BOOTSTRAP_TABLE)
    if result.result.per_target_r is not None:
        run.log_table(pd.DataFrame({"unit": np.arange(result.result.per_target_r.size),
                                    "r": np.asarray(result.result.per_target_r, dtype=np.float64)}),
                      "per_unit_r.parquet")


def log_dimensionality(run: StageRun, table: pd.DataFrame) -> None:
    """Effective dimensionality per point: a table and the metric ``effective_dimensionality`` stepped by point."""
    run.log_table(table, DIMENSIONALITY_TABLE)
    run.log_metric_steps("effective_dimensionality", dict(zip(table.point_index.astype(int),
                                                              table.effective_dimensionality.astype(float))))


def read_pair_rows(run_id: str) -> list[dict[str, Any]]:
    """The tidy rows a finished child run logged."""
    return pd.read_parquet(download_artifacts(run_id, RESULTS_TABLE)).to_dict("records")


def aggregate_over_subjects(tidy: pd.DataFrame, ci_level: float = 0.95) -> pd.DataFrame:
    """Per (region, analysis, metric): mean over subjects, SD, n and a t-interval of the mean (NaN for n < 2)."""
    rows = []
    chosen = tidy[tidy["metric"].isin(AGGREGATED)]
    for (region, analysis, metric), group in chosen.groupby(["region", "analysis", "metric"], sort=False):
        values = group["value"].to_numpy(dtype=np.float64)
        n, mean = values.size, float(values.mean())
        sd = float(values.std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.5 + ci_level / 2, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
        rows.append({"region": region, "analysis": analysis, "metric": metric, "n_subjects": n, "mean": mean,
                     "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "ci_level": ci_level})
    return pd.DataFrame(rows)


def log_parent(run: StageRun, results: list[list[dict[str, Any]]], points: list[str], ci_level: float = 0.95) -> None:
    """The tidy table (a row per subject × region × metric) and per-region aggregates, as tables and metrics."""
    tidy = pd.DataFrame([row for rows in results for row in rows])
    run.log_table(tidy, RESULTS_TABLE)
    run.log_table(tidy, "results.csv")
    aggregates = aggregate_over_subjects(tidy, ci_level)
    run.log_table(aggregates, "aggregates.csv")
    metrics = {}
    for row in tidy.itertuples():
        metrics[_metric_name(row.subject, row.region, row.metric)] = row.value
    for row in aggregates.itertuples():
        for field in ("mean", "ci_low", "ci_high"):
            value = getattr(row, field)
            if np.isfinite(value):
                metrics[_metric_name(row.region, f"{row.metric}_{field}")] = value
    run.log_metrics(metrics)
    run.log_dict({"points": points}, "points.json")


def stimuli_fingerprint(stimuli: list[str]) -> str:
    """SHA-256 (16 hex digits) of the ordered stimulus ids: equal fingerprints mean paired resamples are possible."""
    return hashlib.sha256("\n".join(map(str, stimuli)).encode()).hexdigest()[:16]


def log_parent_resamples(run: StageRun, children: list[tuple[str, str, str, str]], settings: dict[str, Any]) -> None:
    """From the finished child runs (subject, region, run id, selected point): ``pairs.csv`` (per pair its child run, selected
    point, test stimuli count and fingerprint, and the resampling ``settings``), ``bootstrap.parquet`` (subject,
    region, iteration, score: every pair's resampled scores) and ``selection.parquet`` (subject, region, point,
    point_index, selection_score, selected: every pair's layer-selection curve), so that comparisons and the dashboard
    read one run per evaluation."""
    pairs, resamples, selections = [], [], []
    for subject, region, run_id, point in children:
        selection = pd.read_csv(download_artifacts(run_id, PAIR_SELECTION_TABLE))
        selections.append(selection.assign(subject=subject, region=region))
        stimuli = pd.read_csv(download_artifacts(run_id, TEST_STIMULI_TABLE), dtype=str)["stimulus"].tolist()
        pairs.append({"subject": subject, "region": region, "child_run_id": run_id,
                      "selected_point": point, "n_test_stimuli": len(stimuli),
                      "test_stimuli_fingerprint": stimuli_fingerprint(stimuli), **settings})
        if settings.get("n_bootstrap", 0):
            boot = pd.read_parquet(download_artifacts(run_id, BOOTSTRAP_TABLE))
            resamples.append(boot.assign(subject=subject, region=region)[["subject", "region", "iteration", "score"]])
    run.log_table(pd.DataFrame(pairs), PAIRS_TABLE)
    run.log_table(pd.concat(selections, ignore_index=True)[["subject", "region", "point", "point_index", "selection_score",
                                                            "selected"]], SELECTION_TABLE)
    if resamples:
        run.log_table(pd.concat(resamples, ignore_index=True), BOOTSTRAP_TABLE)
