"""Evaluate one model on one brain or behaviour dataset: per subject and region, RSA and/or encoding with CIs.

Examples:
  visreps evaluate model=models:/visreps-custom_cnn_small@k8-pca_pixels-s1 dataset=demo analysis=both
  visreps evaluate --config configs/evaluate/nsd.yaml model=torchvision:alexnet weights=/models/alexnet.pth
  mlflow run . -e evaluate -P model=models:/visreps-custom_cnn@k8-pca_pixels-s1 -P dataset=nsd -P analysis=rsa

Every check (model, dataset, subjects, regions, points, the first stimulus through the model's transform) runs
before extraction. Features of every stimulus are read once per model (``visreps.activations``, projected per
point, cached on disk and shared by the analyses); each (subject, region) is then scored by
``visreps.stages.evaluate_pair`` in a child run, and the parent run per analysis holds the tidy table of every
result and the per-region aggregates over subjects. MLflow layout: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visreps.activations import ActivationReader, FeatureRows, StimulusSet, extract_features
from visreps.config import load_config
from visreps.data import Dataset, open_dataset
from visreps.errors import VisrepsError
from visreps.fingerprints import tree_fingerprint
from visreps.paths import cache_dir, ensure_writable_dir
from visreps.stages.common import add_config_arguments, compute_device
from visreps.stages.evaluate_config import EvaluateConfig
from visreps.stages.evaluate_pair import score_pair, score_selected_pair
from visreps.stages.evaluate_tracking import (
    log_dimensionality, log_pair, log_parent, log_parent_resamples, read_pair_rows,
)
from visreps.tracking import (
    ensure_tracking_available, newest_complete_run, resolve_model, reusable_run, stage_run, supersede_finished,
)

STAGE = "evaluate"
PAIR_STAGE = "evaluate.pair"
STAGE_VERSION = 5  # 2: effective dimensionality of every point; 3: every pair's resamples (bootstrap.parquet, pairs.csv);
#                    4: every pair's selection curve (selection.parquet); 5: encoding zeroes fit-constant features
PAIR_STAGE_VERSION = 2  # child (subject, region) results: unchanged by versions 2 to 4 of the parent; 2: as 5
CONFIG_CLASS = EvaluateConfig
#: the model is what an evaluation is about: another model is another evaluation, not a changed input
IDENTIFYING = ("model",)


class EvaluationError(VisrepsError, ValueError):
    """An evaluation cannot run as configured; the message names the setting and the fix."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    for name in ("model", "dataset", "analysis"):
        parser.add_argument(f"--{name}", default="", help=f"the {name} (same as {name}=...; MLproject parameter)")


def run(args: argparse.Namespace) -> int:
    named = [f"{name}={getattr(args, name)}" for name in ("model", "dataset", "analysis") if getattr(args, name)]
    overrides = named + shlex.split(args.overrides or "") + list(args.override or [])
    config = load_config(EvaluateConfig, STAGE, config_file=args.config or None, overrides=overrides)
    for analysis, run_id in run_evaluate_stage(config).items():
        print(f"evaluate: {analysis} run {run_id}")
    return 0


def dataset_location(config: EvaluateConfig) -> tuple[str, Path]:
    """(reader name, root folder) of ``config.dataset``; ``demo``/``demo_behaviour`` live in the demo folder."""
    if config.dataset in ("demo", "demo_behaviour"):
        from visreps.data.demo import DemoDataConfig, default_demo_root

        root = Path(config.dataset_root) if config.dataset_root else default_demo_root(DemoDataConfig())
        folder = root / ("brain" if config.dataset == "demo" else "behaviour")
        if not folder.is_dir():
            raise EvaluationError(f"the demo dataset is not at {folder}; run `visreps demo_data` first "
                                  "(or pass dataset_root=<demo folder>)")
        return "generic", folder
    if not config.dataset_root:
        raise EvaluationError(f"dataset={config.dataset} needs dataset_root=/path/to/{config.dataset}")
    root = Path(config.dataset_root).expanduser()
    if not root.exists():
        raise EvaluationError(f"dataset_root={config.dataset_root}: {root} does not exist")
    return config.dataset, root


@dataclass
class EvaluationPlan:
    """Everything settled before any heavy work."""

    config: EvaluateConfig
    dataset: Dataset
    pairs: list[tuple[str, str]]
    model: Any
    points: list[str]
    stimuli: StimulusSet
    inputs: dict[str, str]
    device: Any
    cache_root: Path
    selected: dict[tuple[str, str], tuple[str, str]] | None = None  # test-only: (subject, region) -> (point, NSD run)
    dimensionality: Any = None  # per-point effective dimensionality, computed once for all analyses


def _pairs(config: EvaluateConfig, dataset: Dataset) -> list[tuple[str, str]]:
    subjects = config.subjects or dataset.subjects()
    pairs = []
    for subject in subjects:
        for region in config.regions or dataset.regions(subject):
            dataset.check_subject_region(subject, region)
            pairs.append((subject, region))
    return pairs


def prepare(config: EvaluateConfig) -> EvaluationPlan:
    """Check everything and fingerprint the inputs (no extraction yet); one clear error when something is off."""
    ensure_tracking_available()
    if not config.model:
        raise EvaluationError("model is not set; pass model=models:/<name>@<alias>, runs:/<id>/model, a model "
                              "file, timm:<name> or torchvision:<name>")
    name, root = dataset_location(config)
    dataset = open_dataset(name, root, **config.dataset_options)
    if dataset.test_only and config.analyses != ["rsa"]:
        raise EvaluationError(f"dataset {config.dataset} has test stimuli only (rsa only: its layer comes from the "
                              "NSD evaluation of the same model); use analysis=rsa")
    if dataset.kind == "behaviour" and "encoding" in config.analyses:
        raise EvaluationError(f"dataset {config.dataset} is a behaviour dataset: encoding is not defined for it; "
                              "use analysis=rsa")
    pairs = _pairs(config, dataset)
    device = compute_device(config.device, "device")
    model = resolve_model(config.model, weights=config.weights, seed=config.seed, device=device,
                          image_size=config.image_size)
    points = list(config.points or model.points)
    ids: list[str] = []
    for subject, region in pairs:
        responses = dataset.responses(subject, region)
        ids.extend(list(responses.train_ids) + list(responses.test_ids))
    ids = list(dict.fromkeys(str(stimulus) for stimulus in ids))
    inputs = {"model": model.weights_fingerprint, "dataset": tree_fingerprint(root)}
    stimuli = StimulusSet.from_dataset(dataset, ids, inputs["dataset"])
    _probe(model, points, stimuli.check_loadable(model.transform, model.image_size), config, device)
    cache_root = ensure_writable_dir(config.cache_dir, "cache_dir") if config.cache_dir else cache_dir("activations")
    selected = _nsd_selection(config, model, pairs) if dataset.test_only else None
    return EvaluationPlan(config, dataset, pairs, model, points, stimuli, inputs, device, cache_root, selected)


def _nsd_selection(config: EvaluateConfig, model: Any, pairs: list[tuple[str, str]]
                   ) -> dict[tuple[str, str], tuple[str, str]]:
    """(subject, region) -> (point, NSD child run): the point the finished NSD RSA evaluation of the same weights
    selected; EvaluationError naming every pair without one and the command that makes them."""
    selected, missing = {}, []
    for subject, region in pairs:
        found = newest_complete_run({"visreps.stage": PAIR_STAGE, "visreps.dataset": "nsd", "visreps.analysis": "rsa",
                                     "visreps.weights_fingerprint": model.weights_fingerprint,
                                     "visreps.subject": subject, "visreps.region": region})
        if found is None:
            missing.append(f"{subject}/{region}")
        else:
            selected[(subject, region)] = (found.tags["visreps.selected_point"], found.run_id)
    if missing:
        raise EvaluationError(
            f"dataset {config.dataset} takes the layer selected on NSD, but there is no finished NSD evaluation "
            f"(analysis=rsa) of this model (weights {model.weights_fingerprint}) for {', '.join(missing)}; run "
            f"`visreps evaluate model={config.model} dataset=nsd dataset_root=<NSD folder> analysis=rsa` first")
    return selected


def _probe(model: Any, points: list[str], shape: tuple[int, ...], config: EvaluateConfig, device: Any) -> None:
    """One forward pass of a blank stimulus: a model that cannot take the stimuli fails here, not mid-run."""
    import torch

    try:
        with ActivationReader(model.model.to(device), points, config.token) as reader:
            reader(torch.zeros(1, *shape, device=device))
    except (RuntimeError, ValueError, AssertionError) as error:
        raise EvaluationError(f"model {config.model} cannot take the {'x'.join(map(str, shape[-2:]))} stimuli of "
                              f"its transform ({str(error).splitlines()[0]}); check image_size") from None


def run_evaluate_stage(config: EvaluateConfig, parent_run_id: str | None = None) -> dict[str, str]:
    """Evaluate (or re-use) every analysis of ``config``; analysis -> parent run id."""
    plan = prepare(config)
    return {analysis: _run_analysis(plan, analysis, parent_run_id) for analysis in config.analyses}


def _features(plan: EvaluationPlan, stimuli: StimulusSet, points: list[str], projection_dim: int | None):
    config = plan.config
    return extract_features(plan.model.model, stimuli, plan.model.transform, points, cache_root=plan.cache_root,
                            weights_fingerprint=plan.model.weights_fingerprint, token=config.token,
                            projection_dim=projection_dim, projection_seed=config.seed, autocast=config.autocast,
                            batch_size=config.batch_size, num_workers=config.num_workers, device=plan.device,
                            progress=config.progress)


def exact_activations(plan: EvaluationPlan, point: str, stimulus_ids: list[str]):
    """(len(stimulus_ids), D) float32 memmap: the exact (unprojected) activations of one point (cached on disk)."""
    return _features(plan, plan.stimuli.subset(stimulus_ids), [point], None)[point]


def selection_scores(config: EvaluateConfig) -> list[dict[str, Any]]:
    """Layer selection of every (subject, region) and analysis on its **training** stimuli alone (what a sweep
    optimises): rows (subject, region, analysis, selected_point, selection_score). Reads no test response; the
    features of the training stimuli only are extracted."""
    from visreps.alignment.selection import TrainSplit, select_layer

    plan = prepare(config)
    if plan.dataset.test_only:
        raise EvaluationError(f"dataset {config.dataset} has test stimuli only: it has no selection data")
    responses = {pair: plan.dataset.responses(*pair) for pair in plan.pairs}
    train_ids = list(dict.fromkeys(str(i) for r in responses.values() for i in r.train_ids))
    features = _features(plan, plan.stimuli.subset(train_ids), plan.points, config.projection_dim)
    rows = []
    for (subject, region), pair in responses.items():
        train = TrainSplit(FeatureRows(features, features.rows(pair.train_ids), plan.points), pair.train)
        for analysis in config.analyses:
            options = ({"compare": config.compare, "n_rsa_stimuli": config.n_rsa_stimuli} if analysis == "rsa"
                       else {"validation_fraction": config.validation_fraction})
            selection = select_layer(train, analysis=analysis, seed=config.seed, projection_dim=None,
                                     progress=False, **options)
            rows.append({"subject": subject, "region": region, "analysis": analysis,
                         "selected_point": selection.best_layer,
                         "selection_score": float(selection.scores[selection.best_layer])})
    return rows


def _run_analysis(plan: EvaluationPlan, analysis: str, parent_run_id: str | None) -> str:
    config = plan.config.model_copy(update={"analysis": analysis})
    previous = reusable_run(STAGE, config, STAGE_VERSION, plan.inputs, config.force, IDENTIFYING)
    if previous is not None:
        return previous.run_id
    tags = {**plan.model.tags(), "visreps.dataset": config.dataset, "visreps.analysis": analysis,
            "visreps.data_fingerprint": plan.inputs["dataset"]}
    name = f"evaluate-{config.dataset}-{analysis}-{plan.model.weights_fingerprint[:8]}"
    with stage_run(STAGE, config, STAGE_VERSION, tags=tags, run_name=name, parent_run_id=parent_run_id,
                   inputs=plan.inputs, resume=True, identifying=IDENTIFYING) as parent:
        features = None if plan.selected else _features(plan, plan.stimuli, plan.points, config.projection_dim)
        parent.log_params({"resolved.points": plan.points, "resolved.n_stimuli": len(plan.stimuli),
                           "resolved.feature_cache": features.key if features is not None else "none"})
        if features is not None:
            log_dimensionality(parent, _dimensionality(plan, features))
        children = [_pair(plan, config, analysis, subject, region, features, parent.run_id)
                    for subject, region in plan.pairs]
        log_parent(parent, [rows for rows, _ in children], plan.points, config.ci_level)
        log_parent_resamples(parent, [(subject, region, run_id, rows[0]["selected_point"]) for (subject, region),
                                      (rows, run_id) in zip(plan.pairs, children)], _resampling_settings(config))
    if config.force:
        supersede_finished(STAGE, config, STAGE_VERSION, plan.inputs, parent.run_id)
    return parent.run_id


def _resampling_settings(config: EvaluateConfig) -> dict[str, Any]:
    """The settings that decide which stimuli each resample keeps (equal settings + stimuli = paired resamples)."""
    return {"n_bootstrap": config.n_bootstrap, "bootstrap_fraction": config.bootstrap_fraction,
            "bootstrap_replace": config.bootstrap_replace, "bootstrap_seed": config.seed, "compare": config.compare}


def _dimensionality(plan: EvaluationPlan, features) -> Any:
    """Participation ratio of every point's projected features over all stimuli of the evaluation (a table)."""
    import pandas as pd

    from visreps.alignment import effective_dimensionality

    if plan.dimensionality is None:
        plan.dimensionality = pd.DataFrame([
            {"point": point, "point_index": index,
             "effective_dimensionality": effective_dimensionality(features[point], device=plan.device),
             "n_stimuli": int(features[point].shape[0]), "n_features": int(features[point].shape[1])}
            for index, point in enumerate(plan.points)])
    return plan.dimensionality


def _pair(plan: EvaluationPlan, config: EvaluateConfig, analysis: str, subject: str, region: str, features,
          parent_id: str) -> tuple[list[dict[str, Any]], str]:
    """(tidy rows, child run id) of one (subject, region): re-used from its finished child run, or scored and logged."""
    pair_config = config.model_copy(update={"subjects": [subject], "regions": [region]})
    previous = reusable_run(PAIR_STAGE, pair_config, PAIR_STAGE_VERSION, plan.inputs, config.force, IDENTIFYING)
    if previous is not None:
        return read_pair_rows(previous.run_id), previous.run_id
    responses = plan.dataset.responses(subject, region)

    def exact(point: str, test_ids: list[str]):
        return exact_activations(plan, point, test_ids)

    tags = {"visreps.subject": subject, "visreps.region": region, "visreps.analysis": analysis,
            "visreps.dataset": config.dataset, "visreps.weights_fingerprint": plan.model.weights_fingerprint}
    with stage_run(PAIR_STAGE, pair_config, PAIR_STAGE_VERSION, tags=tags,
                   run_name=f"{subject}-{region}-{analysis}", parent_run_id=parent_id, inputs=plan.inputs, experiment=config.experiment,
                   identifying=IDENTIFYING) as child:
        if plan.selected:
            point, nsd_run = plan.selected[(subject, region)]
            child.set_tags({"visreps.selection_run_id": nsd_run})
            result = score_selected_pair(config, responses, point, plan.points, exact)
        else:
            result = score_pair(config, analysis, responses, features, plan.points, exact)
        log_pair(child, result)
    if config.force:
        supersede_finished(PAIR_STAGE, pair_config, PAIR_STAGE_VERSION, plan.inputs, child.run_id)
    return result.tidy_rows(), child.run_id
