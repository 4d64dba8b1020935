"""The tidy tables a compare run logs besides its statistics, read from its evaluation parent runs (and their
networks' training runs) once, so that the dashboard and `visreps figures` read one run, not thousands:

- ``dimensionality``: effective dimensionality per evaluation and point, with how often the point was selected;
- ``subjects``: every subject × region score of every evaluation (the per-subject view);
- ``selection``: per evaluation, region and point the mean selection score over subjects and how many subjects
  selected the point (the layer-selection curves);
- ``training``: per trained network its training history (loss and accuracy per epoch);
- ``evaluations``: per evaluation its condition, seed, model and the training/registry provenance of the model.

Every table carries the condition columns ``condition, role, label_source, K, architecture, seed, run_id``.
"""

from __future__ import annotations

import pandas as pd

from visreps.stages.compare_statistics import UNTRAINED, Evaluation

#: evaluation tidy metric -> measure of the comparison table
MEASURE_OF_METRIC = {"score": "raw", "score_normalised": "normalised"}
#: a compare run's tables -> the artifacts it logs them as (the first one is read back)
LOGGED_TABLES = {"comparison": ("comparison.parquet", "comparison.csv"), "answer": ("answer.csv",),
                 "reconstruction": ("reconstruction.parquet", "reconstruction.csv"), "robustness": ("robustness.csv",),
                 "ranking_reliability": ("ranking_reliability.csv",), "dimensionality": ("dimensionality.csv",),
                 "subjects": ("subjects.parquet",), "selection": ("selection.parquet",),
                 "training": ("training.parquet",), "evaluations": ("evaluations.csv",)}
#: evaluation tags kept in ``evaluations``
PROVENANCE_TAGS = ("model", "model_run_id", "registered_model", "model_version", "weights_fingerprint", "epoch")


def _condition_columns(evaluation: Evaluation) -> dict[str, object]:
    info = {key: evaluation.info.get(key) for key in ("role", "label_source", "K", "architecture")}
    return {"condition": evaluation.condition, **info, "seed": evaluation.seed, "run_id": evaluation.run_id}


def compare_run_table(run_id: str, name: str) -> pd.DataFrame:
    """The table ``name`` (a key of ``LOGGED_TABLES``) of a compare run; empty when the run logged none."""
    from visreps.tracking.results import run_table

    return run_table(run_id, LOGGED_TABLES[name][0])


def _stack(tables: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def dimensionality_table(evaluations: list[Evaluation]) -> pd.DataFrame:
    """Per evaluation and point: effective dimensionality (evaluate's ``effective_dimensionality.csv``) with the
    condition, how many (subject, region) pairs selected the point and whether it is the most often selected."""
    from visreps.stages.evaluate_tracking import DIMENSIONALITY_TABLE
    from visreps.tracking.results import run_table

    tables = []
    for evaluation in evaluations:
        table = run_table(evaluation.run_id, DIMENSIONALITY_TABLE)
        if table.empty:
            continue  # test-only datasets (their points come from the NSD evaluation) log none
        selected = evaluation.pairs.selected_point.value_counts()
        table["n_selected"] = table.point.map(selected).fillna(0).astype(int)
        table["most_selected"] = table.point == selected.idxmax()
        tables.append(table.assign(**_condition_columns(evaluation)))
    return _stack(tables)


def subject_table(evaluations: list[Evaluation]) -> pd.DataFrame:
    """A row per evaluation × subject × region × measure: ``subject, region, measure, score, selected_point`` and
    the condition columns (the evaluations' own tidy scores, nothing resampled)."""
    tables = []
    for evaluation in evaluations:
        rows = evaluation.results[evaluation.results.metric.isin(list(MEASURE_OF_METRIC))]
        table = pd.DataFrame({"subject": rows.subject.astype(str), "region": rows.region.astype(str),
                              "measure": rows.metric.map(MEASURE_OF_METRIC), "score": rows.value.astype(float),
                              "selected_point": rows.selected_point})
        tables.append(table.assign(**_condition_columns(evaluation)))
    return _stack(tables)


def selection_table(evaluations: list[Evaluation]) -> pd.DataFrame:
    """Per evaluation × region × point (in extraction order): ``point, point_index``, the mean and SD over
    subjects of the selection score, ``n_selected`` (subjects whose selection chose the point), ``n_subjects``,
    and the condition columns. Evaluations logged before evaluate stage version 4 (no ``selection.parquet``) are
    left out."""
    from visreps.stages.evaluate_tracking import SELECTION_TABLE
    from visreps.tracking.results import run_table

    tables = []
    for evaluation in evaluations:
        curves = run_table(evaluation.run_id, SELECTION_TABLE)
        if curves.empty:
            continue
        curves = curves.assign(selected=curves.selected.astype(bool))
        table = (curves.groupby(["region", "point_index", "point"], sort=True)
                 .agg(selection_score=("selection_score", "mean"), selection_score_sd=("selection_score", "std"),
                      n_selected=("selected", "sum"), n_subjects=("subject", "nunique")).reset_index())
        tables.append(table.assign(n_selected=table.n_selected.astype(int), **_condition_columns(evaluation)))
    return _stack(tables)


def evaluations_table(evaluations: list[Evaluation], tags: dict[str, dict[str, str]]) -> pd.DataFrame:
    """A row per evaluation: the condition columns and the model's provenance tags (``PROVENANCE_TAGS``: model
    spec, training run, registered model and version, weights fingerprint, epoch; empty when unknown)."""
    rows = [{**_condition_columns(e), **{key: tags[e.run_id].get(f"visreps.{key}", "") for key in PROVENANCE_TAGS}}
            for e in evaluations]
    return pd.DataFrame(rows)


def training_table(evaluations: list[Evaluation], tags: dict[str, dict[str, str]]) -> pd.DataFrame:
    """Per trained network (untrained ones left out) its training run's ``training_history.csv`` (``epoch`` and
    the logged losses and accuracies), with ``model_run_id`` and the condition columns; networks without a visreps
    training run (timm, torchvision, files) are left out."""
    from visreps.tracking.results import run_table

    tables = []
    for evaluation in evaluations:
        model_run = tags[evaluation.run_id].get("visreps.model_run_id", "")
        if evaluation.info.get("role") == UNTRAINED or not model_run:
            continue
        history = run_table(model_run, "training_history.csv")
        if not history.empty:
            tables.append(history.assign(model_run_id=model_run, **_condition_columns(evaluation)))
    return _stack(tables)


def study_tables(evaluations: list[Evaluation], tags: dict[str, dict[str, str]]) -> dict[str, pd.DataFrame]:
    """Every table above by name (``tags``: run id -> the evaluation run's tags)."""
    return {"dimensionality": dimensionality_table(evaluations), "subjects": subject_table(evaluations),
            "selection": selection_table(evaluations), "training": training_table(evaluations, tags),
            "evaluations": evaluations_table(evaluations, tags)}
