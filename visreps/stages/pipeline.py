"""Run every stage end to end: demo data → fine-label training → coarse labels → training at each K →
evaluation of every network (and the untrained one) on the demo brain and behaviour data → a comparison per
dataset and analysis (``visreps compare``: the smallest K not significantly below the fine network).

Each child stage is configured the way it is on its own (``configs/<stage>/default.yaml``, then the experiment
file and the overrides named in the pipeline's section), all child configurations are resolved and validated
before any work starts, and a child whose identical configuration already finished is re-used, so running the
pipeline again only does what is missing. The pipeline run holds the child run ids, a summary table, a
held-out-accuracy-versus-K figure and an alignment-versus-K figure per dataset and region.

Examples:
  visreps pipeline                                   # the demo (configs/pipeline/default.yaml)
  visreps pipeline ks=[2,8] seeds=[1,2]              # fewer granularities, two seeds
  visreps pipeline 'train.overrides=[epochs=2]'      # override a child stage's key
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from tqdm.auto import tqdm

from visreps.config import ConfigError, ConfigModel, StageConfig, StageSection, load_config, runtime_field, to_yaml
from visreps.errors import VisrepsError
from visreps.stages.common import add_config_arguments, stage_config
from visreps.tracking import download_artifacts, ensure_tracking_available, finished_run, stage_run

STAGE = "pipeline"
STAGE_VERSION = 1
STEPS = ("demo_data", "train_fine", "labels", "train", "evaluate", "compare", "sweep")
#: the default steps (the sweep is an option: `steps=[demo_data,sweep]` or the default steps plus sweep)
DEFAULT_STEPS = STEPS[:-1]
#: placeholders filled in while the pipeline runs: the fine-label network's URI, the latest labels run id, and
#: (evaluate jobs) the model of the training job with this index
FINE_MODEL = "PIPELINE_FINE_MODEL"
LABELS_RUN = "PIPELINE_LABELS_RUN"
TRAINED_MODEL = "PIPELINE_TRAINED_MODEL_"


class PipelineConfig(StageConfig):
    """The grid the pipeline runs and how each child stage is configured."""

    experiment: str = runtime_field("visreps-pipeline",
                            description="MLflow experiment of the pipeline run and of every child run")
    steps: list[Literal["demo_data", "train_fine", "labels", "train", "evaluate", "compare", "sweep"]] = Field(
        default_factory=lambda: list(DEFAULT_STEPS), description="steps to run (demo_data is needed by every later one)")
    demo_data: StageSection = Field(default_factory=lambda: StageSection(overrides=[
        "n_subjects=2", "n_train_stimuli_per_subject=320", "n_test_stimuli=200"]),
        description="the demo data (a smaller brain set than the stand-alone default, for the 10-minute budget)")
    train: StageSection = Field(default_factory=lambda: StageSection(config="configs/train/demo.yaml"),
                                description="every training run (fine and coarse)")
    evaluate: StageSection = Field(default_factory=lambda: StageSection(config="configs/evaluate/demo.yaml"),
                                   description="every evaluation run")
    compare: StageSection = Field(default_factory=lambda: StageSection(config="configs/compare/demo.yaml"),
                                  description="every compare run (one per dataset and analysis)")
    sweep: StageSection = Field(default_factory=lambda: StageSection(config="configs/sweep/demo_grid.yaml"),
                                description="the optional sweep step (on the pipeline's demo data)")
    evaluate_datasets: list[Literal["demo", "demo_behaviour"]] = Field(
        default_factory=lambda: ["demo", "demo_behaviour"],
        description="demo datasets every trained network (and the fine network's untrained state) is evaluated on")
    label_sources: dict[str, StageSection] = Field(
        default_factory=lambda: {"pca_pixels": StageSection(config="configs/labels/demo_pixels.yaml"),
                                 "pca_demo_fine": StageSection(config="configs/labels/demo_model.yaml")},
        description="label source name (used in tags and aliases) -> labels stage config")
    fine_model_source: str = Field(
        "pca_demo_fine", description="label source that takes the network trained on fine labels (seed = first seed) as its "
                        "feature model (source.name is filled in); '' = none")
    ks: list[int] = Field(default_factory=lambda: [2, 4, 8, 16, 32], description="granularities trained per source")
    seeds: list[int] = Field(default_factory=lambda: [1], description="training seeds per (source, K)")
    force: bool = runtime_field(False, description="redo the pipeline run (children re-used)")

    @field_validator("ks")
    @classmethod
    def _powers_of_two(cls, value: list[int]) -> list[int]:
        bad = [k for k in value if k < 2 or k & (k - 1)]
        if bad:
            raise ValueError(f"K must be powers of two >= 2, got {bad}")
        return value

    @field_validator("seeds")
    @classmethod
    def _some_seed(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("seeds is empty; give at least one training seed, e.g. seeds=[1]")
        return value


CONFIG_CLASS = PipelineConfig


class PipelineError(VisrepsError, ValueError):
    """The pipeline's grid or a child stage's configuration is inconsistent."""


def child_config(schema: type[ConfigModel], stage: str, section: StageSection, extra: list[str],
                 where: str) -> ConfigModel:
    """Resolve a child stage's config: its defaults, ``section.config``, ``section.overrides``, then ``extra``.

    Errors name the pipeline section they come from (``where``, e.g. ``label_sources.pca_pixels``).
    """
    from visreps.paths import project_root

    config_file = None
    if section.config:
        config_file = Path(section.config).expanduser()
        if not config_file.is_absolute():
            config_file = project_root() / config_file
    try:
        return load_config(schema, stage, config_file=config_file, overrides=[*section.overrides, *extra])
    except ConfigError as error:
        raise ConfigError(f"pipeline section {where} ({stage} stage): {error}") from None


@dataclass
class Job:
    """One child stage run of the pipeline, its configuration resolved before any work."""

    step: str
    config: Any
    label_source: str = ""
    k: int | None = None
    seed: int | None = None
    model_of: int | None = None  # evaluate jobs: index of the training job whose network is evaluated
    epoch0: bool = False  # evaluate jobs: the untrained (epoch-0) state of that network


def plan(config: PipelineConfig) -> list[Job]:
    """Resolve and validate every child configuration up front (bad keys fail here, naming the stage).

    Coarse training jobs name their label table ``runs:/<LABELS_RUN>/...``; the labels run id is filled in when the
    labels job has run; the fine-model label source's ``source.name`` after fine training.
    """
    from visreps.data.demo import default_demo_root
    from visreps.stages.demo_data import DemoDataStageConfig
    from visreps.labels.config import LabelsConfig
    from visreps.training import TrainConfig

    steps = [step for step in STEPS if step in config.steps]
    if not steps:
        raise PipelineError("steps is empty; nothing to run")
    if config.fine_model_source and config.fine_model_source not in config.label_sources:
        raise PipelineError(f"fine_model_source={config.fine_model_source!r} is not one of label_sources "
                            f"{sorted(config.label_sources)}")
    if config.fine_model_source and "labels" in steps and "train_fine" not in steps:
        raise PipelineError(f"label source {config.fine_model_source!r} needs the fine-label network: add "
                            "'train_fine' to steps or drop fine_model_source")
    common = [f"experiment={config.experiment}"]
    demo = child_config(DemoDataStageConfig, "demo_data", config.demo_data, common, "demo_data")
    images = default_demo_root(demo) / "train_images"
    common.append(f"dataset.root={images}")
    jobs = [Job("demo_data", demo)]

    def train_job(label_source: str, k: int | None, seed: int, table: str) -> Job:
        extra = [f"labels.table={table}", f"labels.source_name={label_source}", f"seed={seed}",
                 f"labels.num_classes={'null' if k is None else k}"]
        train = child_config(TrainConfig, "train", config.train, common + extra, "train")
        return Job("train", train, label_source, k, seed)

    if "train_fine" in steps:
        jobs += [train_job("fine", None, seed, "fine") for seed in config.seeds]
    if "labels" in steps:
        for name, section in config.label_sources.items():
            takes_fine_model = name == config.fine_model_source
            labels = child_config(LabelsConfig, "labels", section,
                                  common + [f"name={name}"] + ([f"source.name={FINE_MODEL}"] if takes_fine_model else []),
                                  f"label_sources.{name}")
            if takes_fine_model and labels.source.kind != "model":
                raise PipelineError(f"label source {name!r} takes the fine-label network: it needs source.kind=model")
            missing = [k for k in config.ks if k not in labels.ks]
            if "train" in steps and missing:
                raise PipelineError(f"label source {name!r} makes K={labels.ks}, but the pipeline trains K={missing}; "
                                    f"add them to label_sources.{name}.overrides (ks=[...]) or drop them from ks")
            jobs.append(Job("labels", labels, name))
            if "train" in steps:
                jobs += [train_job(name, k, seed, f"runs:/{LABELS_RUN}/label_tables/k{k}.parquet")
                         for k in config.ks for seed in config.seeds]
    if "evaluate" in steps:
        jobs += _evaluate_jobs(config, jobs, default_demo_root(demo))
    elif "compare" in steps:
        raise PipelineError("step 'compare' compares the pipeline's evaluations: add 'evaluate' to steps")
    return jobs


def _evaluate_jobs(config: PipelineConfig, jobs: list[Job], demo_root: Path) -> list[Job]:
    """One evaluation per trained network and demo dataset, plus the fine network's untrained state."""
    from visreps.stages.evaluate import EvaluateConfig

    trained = [(index, job) for index, job in enumerate(jobs) if job.step == "train"]
    if not trained:
        raise PipelineError("step 'evaluate' needs trained networks: add 'train_fine' or 'train' to steps")
    targets = [(index, job, False) for index, job in trained]
    fine = [(index, job) for index, job in trained if job.label_source == "fine"]
    targets.append((*(fine or trained)[0], True))
    evaluations = []
    for index, job, epoch0 in targets:
        for dataset in config.evaluate_datasets:
            extra = [f"experiment={config.experiment}", f"model={TRAINED_MODEL}{index}", f"dataset={dataset}",
                     f"dataset_root={demo_root}"] + (["analysis=rsa"] if dataset == "demo_behaviour" else [])
            evaluate = child_config(EvaluateConfig, "evaluate", config.evaluate, extra, "evaluate")
            evaluations.append(Job("evaluate", evaluate, job.label_source, job.k, job.seed, index, epoch0))
    return evaluations


def run_pipeline(config: PipelineConfig) -> str:
    """Run (or re-use) every planned child stage in order; returns the pipeline run id."""
    from visreps.stages.demo_data import run_demo_data_stage
    from visreps.stages.evaluate import run_evaluate_stage
    from visreps.stages.labels import run_labels_stage
    from visreps.stages.train import run_train_stage

    jobs = plan(config)
    ensure_tracking_available()
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    fine_model_uri = ""
    labels_run = ""
    trained_runs: dict[int, str] = {}
    evaluations: list[dict[str, Any]] = []
    with stage_run(STAGE, config, STAGE_VERSION, run_name="pipeline") as run:
        run.log_text("\n---\n".join(f"# {job.step} {job.label_source} K={job.k} seed={job.seed}\n"
                                      f"{to_yaml(job.config)}" for job in jobs), "child_configs.yaml")
        for index, job in enumerate(tqdm(jobs, desc="pipeline", unit="stage", disable=None)):
            if job.step == "demo_data":
                run_id, _ = run_demo_data_stage(job.config, parent_run_id=run.run_id)
            elif job.step == "labels":
                if job.config.source.name == FINE_MODEL:
                    job.config.source.name = fine_model_uri
                run_id = labels_run = run_labels_stage(job.config, parent_run_id=run.run_id)
            elif job.step == "evaluate":
                artifact = "model_epoch0" if job.epoch0 else "model"
                job.config.model = f"runs:/{trained_runs[job.model_of]}/{artifact}"
                parents = run_evaluate_stage(job.config, parent_run_id=run.run_id)
                evaluations += _evaluation_rows(job, parents)
                run.set_tags({f"visreps.child.{index:03d}": ",".join(parents.values())})
                continue
            else:
                if LABELS_RUN in job.config.labels.table:
                    job.config.labels.table = job.config.labels.table.replace(LABELS_RUN, labels_run)
                run_id = trained_runs[index] = run_train_stage(job.config, parent_run_id=run.run_id)
            child = finished_run(run_id)
            if job.step == "train" and job.label_source == "fine" and job.seed == config.seeds[0]:
                fine_model_uri = f"runs:/{run_id}/model"  # pinned to the run; an alias could move later
            run.set_tags({f"visreps.child.{index:03d}": run_id})
            rows.append({"step": job.step, "label_source": job.label_source, "seed": job.seed, "run_id": run_id,
                         "K": int(child.tags["visreps.K"]) if "visreps.K" in child.tags else job.k,
                         "heldout_accuracy": child.metrics.get("final_heldout_accuracy")})
        _log_summary(run, rows, time.monotonic() - started)
        if evaluations:
            _log_evaluations(run, evaluations)
        compared = _compare(config, run, evaluations) if evaluations and "compare" in config.steps else {}
        if "sweep" in config.steps:
            _sweep(config, run, jobs[0].config)
    print(f"pipeline: run {run.run_id}: {len(rows)} stage runs in {time.monotonic() - started:.0f} s")
    if compared:
        print("pipeline: see the results in the dashboard: `visreps dashboard` (add --tracking-uri URI for a server), "
              "then open " + ", ".join(f"http://127.0.0.1:8050/?run={i} ({name})" for name, i in compared.items()))
    return run.run_id


def _sweep(config: PipelineConfig, run, demo) -> None:
    """The sweep step: the configured sweep with its demo paths pointed at the pipeline's demo data."""
    from visreps.data.demo import default_demo_root
    from visreps.stages.sweep import SweepConfig, run_sweep_stage

    demo_root = default_demo_root(demo)
    sweep = child_config(SweepConfig, "sweep", config.sweep, [f"experiment={config.experiment}"], "sweep")
    images = f"dataset.root={demo_root / 'train_images'}"
    sweep.train.overrides.append(images)
    for section in sweep.label_sources.values():
        section.overrides.append(images)
    for dataset, section in sweep.evaluate.items():
        if dataset in ("demo", "demo_behaviour"):
            section.overrides.append(f"dataset_root={demo_root}")
    run.set_tags({"visreps.sweep": run_sweep_stage(sweep, parent_run_id=run.run_id)})


def _log_summary(run, rows: list[dict[str, Any]], seconds: float) -> None:
    """summary.csv (one row per child run), held-out accuracy metrics per source/K/seed and their figure."""
    import pandas as pd

    table = pd.DataFrame(rows).astype({"seed": "Int64", "K": "Int64"})
    run.log_table(table, "summary.csv")
    run.log_metrics({"n_child_runs": float(len(table)), "seconds": seconds})
    trained = table[(table.step == "train") & table.heldout_accuracy.notna()]
    if len(trained):
        run.log_metrics({f"heldout_accuracy.{row.label_source}.k{int(row.K)}.s{int(row.seed)}":
                         float(row.heldout_accuracy) for row in trained.itertuples()})
        run.log_figure(accuracy_figure(trained), "figures/heldout_accuracy_vs_k.png")


def _evaluation_rows(job: Job, parents: dict[str, str]) -> list[dict[str, Any]]:
    """Per-region means over subjects of every analysis of one evaluation, for the pipeline's summary."""
    import pandas as pd

    rows = []
    for analysis, parent_id in parents.items():
        aggregates = pd.read_csv(download_artifacts(parent_id, "aggregates.csv"))
        for row in aggregates[aggregates.metric.isin(["score", "noise_ceiling"])].itertuples():
            rows.append({"dataset": job.config.dataset, "analysis": analysis, "region": row.region,
                         "metric": row.metric, "mean": row.mean, "label_source": job.label_source,
                         "K": job.k, "seed": job.seed, "untrained": job.epoch0, "run_id": parent_id})
    return rows


def _compare(config: PipelineConfig, run, evaluations: list[dict[str, Any]]) -> dict[str, str]:
    """One compare run per (dataset, analysis) over the pipeline's evaluations; prints each answer table and
    returns "dataset analysis" -> compare run id."""
    from visreps.stages.compare import CompareConfig, answer_text, run_compare_stage

    groups: dict[tuple[str, str], list[str]] = {}
    for row in evaluations:
        ids = groups.setdefault((row["dataset"], row["analysis"]), [])
        if row["run_id"] not in ids:
            ids.append(row["run_id"])
    compared = {}
    for (dataset, analysis), run_ids in groups.items():
        compare = child_config(CompareConfig, "compare", config.compare, [f"experiment={config.experiment}"], "compare")
        compare = compare.model_copy(update={"run_ids": run_ids})
        compare_id = run_compare_stage(compare, parent_run_id=run.run_id)
        run.set_tags({f"visreps.compare.{dataset}.{analysis}": compare_id})
        print(answer_text(compare_id))
        print(f"  figures: run {compare_id}, artifacts figures/ (coarseness, reconstruction, dimensionality, ...)")
        compared[f"{dataset} {analysis}"] = compare_id
    return compared


def _log_evaluations(run, evaluations: list[dict[str, Any]]) -> None:
    """evaluations.csv and one alignment-versus-K figure per dataset and analysis."""
    import pandas as pd

    table = pd.DataFrame(evaluations).astype({"seed": "Int64", "K": "Int64"})
    run.log_table(table, "evaluations.csv")
    scores = table[table.metric == "score"]
    for (dataset, analysis), rows in scores.groupby(["dataset", "analysis"]):
        run.log_figure(alignment_figure(rows), f"figures/{dataset}_{analysis}_vs_k.png")


def alignment_figure(scores):
    """Mean score over subjects against K per label source and region; fine and untrained as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = sorted(scores.region.unique())
    figure, axes = plt.subplots(1, len(regions), figsize=(4.2 * len(regions), 3.4), squeeze=False)
    for axis, region in zip(axes[0], regions):
        rows = scores[scores.region == region]
        coarse = rows[(rows.label_source != "fine") & ~rows.untrained]
        for source, group in coarse.groupby("label_source"):
            group = group.sort_values("K")
            axis.plot(group.K, group["mean"], marker="o", label=source)
        for label, chosen, style in (("fine (64 classes)", (rows.label_source == "fine") & ~rows.untrained, "--"),
                                     ("untrained", rows.untrained, ":")):
            if chosen.any():
                axis.axhline(float(rows[chosen]["mean"].iloc[0]), color="grey", linestyle=style, label=label)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("K (classes)")
        axis.set_ylabel("score (mean over subjects)")
        axis.set_title(region)
        axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def accuracy_figure(trained):
    """Held-out accuracy against K (log2 axis) per label source, with chance (1/K) for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    for source, rows in trained.groupby("label_source"):
        rows = rows.sort_values("K")
        axis.plot(rows.K, rows.heldout_accuracy, marker="o", label=source)
    ks = np.array(sorted(trained.K.dropna().unique()), dtype=float)
    axis.plot(ks, 1.0 / ks, color="grey", linestyle=":", label="chance (1/K)")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("K (classes)")
    axis.set_ylabel("held-out accuracy (final epoch)")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    run_pipeline(stage_config(PipelineConfig, STAGE, args))
    return 0
