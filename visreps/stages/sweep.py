"""Sweep: an Optuna study over networks (label source × K × seed × architecture × hyper-parameters), each trial
trained and scored on selection data only, with many workers on one storage and one MLflow tree.

Examples:
  visreps sweep --config configs/sweep/demo_grid.yaml
  visreps sweep --config configs/sweep/paper_grid.yaml storage=postgresql://visreps@db:5432/visreps workers=4
  visreps sweep --config configs/sweep/paper_grid.yaml storage=postgresql://... worker=true   # join from elsewhere
  mlflow run . -e sweep -P config=configs/sweep/paper_grid.yaml

The launcher (``visreps sweep``) checks the configuration, creates the study (enqueuing a grid), prints and logs
the planned size, opens the parent MLflow run, starts ``workers`` worker processes and, when the study is done,
logs the trials table, best trials and figures, and optionally the test-split evaluations of the best trials
(``evaluate_best``). A trial is a child run (stage ``sweep.trial``) holding its labels, train and selection runs'
ids; the train run points back (``visreps.sweep_trial_run_id``). Stages re-use finished runs, so a trial whose
training already finished costs only its selection scoring. Method and operation: docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from visreps.config import ConfigModel, to_yaml
from visreps.stages.common import add_config_arguments, stage_config
from visreps.stages.pipeline import child_config
from visreps.sweeps.config import FINE, UNTRAINED, SweepConfig, SweepError

STAGE, TRIAL_STAGE = "sweep", "sweep.trial"
STAGE_VERSION = 2  # 2: objectives.csv, importances.csv; figures drawn from the tables
TRIAL_STAGE_VERSION = 2  # 2: encoding objectives with fit-constant features zeroed
CONFIG_CLASS = SweepConfig


class TrialIdentity(ConfigModel):
    """What makes a trial run the same work: its study and parameters (a retried trial continues its run)."""

    study_name: str
    params: dict[str, Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--workers", type=int, default=0, help="worker processes (same as workers=N)")
    parser.add_argument("--parent-run-id", default="", help=argparse.SUPPRESS)  # set by the launcher for its workers


def run(args: argparse.Namespace) -> int:
    config = stage_config(SweepConfig, STAGE, args)
    if args.workers:
        config = config.model_copy(update={"workers": args.workers})
    if config.worker:
        ran = run_worker_process(config, args.parent_run_id or None)
        print(f"sweep worker {os.getpid()}: {ran} trials")
        return 0
    print(f"sweep: run {run_sweep_stage(config)}")
    return 0


def storage_url(config: SweepConfig) -> str:
    from visreps.paths import home
    from visreps.sweeps.study import default_storage

    return config.storage or default_storage(home())


def _train_config(config: SweepConfig, params: dict[str, Any], table: str, source: str):
    from visreps.training import TrainConfig

    extra = [f"experiment={config.experiment}", f"labels.table={table}", f"labels.source_name={source}"]
    if "K" in params and source != FINE:
        extra.append(f"labels.num_classes={int(params['K'])}")
    if "seed" in params:
        extra.append(f"seed={int(params['seed'])}")
    if "architecture" in params:
        extra.append(f"model.architecture={params['architecture']}")
    extra += [f"{name}={value}" for name, value in params.items() if name not in ("label_source", "K", "seed",
                                                                                  "architecture")]
    return child_config(TrainConfig, "train", config.train, extra, "train")


def _labels_config(config: SweepConfig, source: str):
    from visreps.labels.config import LabelsConfig

    return child_config(LabelsConfig, "labels", config.label_sources[source],
                        [f"experiment={config.experiment}", f"name={source}"], f"label_sources.{source}")


def _evaluate_config(config: SweepConfig, dataset: str, model: str, analysis: str | None = None):
    """The evaluate config of ``dataset`` for ``model`` (``analysis`` None: the section's own)."""
    from visreps.stages.evaluate import EvaluateConfig

    extra = [f"experiment={config.experiment}", f"model={model}", f"dataset={dataset}", "progress=false"]
    return child_config(EvaluateConfig, "evaluate", config.evaluate[dataset],
                        extra + ([f"analysis={analysis}"] if analysis else []), f"evaluate.{dataset}")


def check_configs(config: SweepConfig) -> None:
    """Resolve every child configuration a trial can need (bad keys fail here, before any trial)."""
    points = config.grid_points() if config.sampler.type == "grid" else [
        {name: (p.choices[0] if p.type == "categorical" else p.low) for name, p in config.search_space.items()}]
    for source in config.label_sources:
        labels = _labels_config(config, source)
        root = labels.dataset.root.strip()
        if not root or (root != "demo" and not Path(root).expanduser().is_dir()):
            raise SweepError(f"label source {source!r}: dataset.root={root!r} is not a folder; set "
                             f"dataset.root=<class-folder tree> (or demo) in label_sources.{source}.overrides")
        made = labels.ks
        wanted = [k for k in (config.search_space["K"].grid() or []) if k not in made] if "K" in config.search_space else []
        if wanted:
            raise SweepError(f"label source {source!r} makes K={made}, but the search space has K={wanted}; add them "
                             f"to label_sources.{source}.overrides (ks=[...]) or drop them from the search space")
    for params in points[:50]:
        source = str(params.get("label_source", FINE))
        _train_config(config, params, "fine", source)
    for objective in config.objectives:
        if objective.dataset:
            _evaluate_config(config, objective.dataset, "model.pt", objective.name.removeprefix("selection_"))


def _values(config: SweepConfig, run, train_run: str, untrained: bool) -> list[float]:
    """The trial's objective values (held-out accuracy of the run; selection scores of its network)."""
    from visreps.stages.evaluate import selection_scores
    from visreps.tracking import client, finished_run

    values = []
    model = f"runs:/{train_run}/{'model_epoch0' if untrained else 'model'}"
    for objective in config.objectives:
        if objective.name == "heldout_accuracy":
            if untrained:
                history = client().get_metric_history(train_run, "heldout_accuracy")
                value = next(m.value for m in history if m.step == 0)
            else:
                value = finished_run(train_run).metrics["final_heldout_accuracy"]
        else:
            analysis = objective.name.removeprefix("selection_")
            rows = pd.DataFrame(selection_scores(_evaluate_config(config, objective.dataset, model, analysis)))
            run.log_table(rows, f"selection_{objective.dataset}_{analysis}.csv")
            value = float(rows.selection_score.mean())
        values.append(float(value))
    return values


def when_free(stage: Any, *args: Any, poll_s: float = 5.0, **options: Any) -> str:
    """Run a stage; while another worker runs the same stage run (two trials sharing a training or a labels run),
    wait for it and then re-use its result."""
    from visreps.tracking import RunInProgress

    while True:
        try:
            return stage(*args, **options)
        except RunInProgress:
            time.sleep(poll_s)


def trial_objective(config: SweepConfig, parent_run_id: str | None):
    """The objective the sweep engine runs: ``(params, report, number) -> values`` (module docstring)."""
    from visreps.stages.labels import run_labels_stage
    from visreps.stages.train import run_train_stage
    from visreps.tracking import client, stage_run
    from visreps.training.errors import TrainingStopped

    def objective(params: dict[str, Any], report, number: int) -> list[float]:
        started = time.monotonic()
        source = str(params.get("label_source", FINE))
        tags = {"visreps.study": config.study_name, "visreps.trial_number": number,
                **{f"visreps.param.{name}": value for name, value in params.items()}}
        with stage_run(TRIAL_STAGE, TrialIdentity(study_name=config.study_name, params=params), TRIAL_STAGE_VERSION,
                       tags=tags, experiment=config.experiment, run_name=f"trial-{number}",
                       parent_run_id=parent_run_id, resume=True) as run:
            table, links = "fine", {}
            if source not in (FINE, UNTRAINED):
                links["visreps.labels_run_id"] = when_free(run_labels_stage, _labels_config(config, source), run.run_id)
                table = f"runs:/{links['visreps.labels_run_id']}/label_tables/k{int(params['K'])}.parquet"
            train = _train_config(config, params, table, FINE if source == UNTRAINED else source)
            prune = None
            if config.pruner.type != "none" and source != UNTRAINED:
                def prune(epoch: int, metrics: dict[str, float]) -> None:
                    if "heldout_accuracy" in metrics:
                        report(epoch, float(metrics["heldout_accuracy"]))
            try:
                links["visreps.train_run_id"] = when_free(run_train_stage, train, run.run_id, on_epoch=prune)
            except TrainingStopped as stopped:
                run.set_tags({"visreps.pruned": str(stopped)})
                raise
            client().set_tag(links["visreps.train_run_id"], "visreps.sweep_trial_run_id", run.run_id)
            run.set_tags(links)
            values = _values(config, run, links["visreps.train_run_id"], source == UNTRAINED)
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            run.log_metrics({**{o.key: v for o, v in zip(config.objectives, values)},
                             "trial_seconds": time.monotonic() - started, "peak_rss_mb": peak_mb})
        return values

    return objective


def run_worker_process(config: SweepConfig, parent_run_id: str | None) -> int:
    """One worker: join the study and run trials until it is done."""
    from visreps.sweeps.study import load_study, run_worker
    from visreps.tracking import ensure_tracking_available

    ensure_tracking_available()
    study = load_study(config, storage_url(config), wait_s=60.0)
    return run_worker(study, config, trial_objective(config, parent_run_id or _launcher_run(config)))


def _launcher_run(config: SweepConfig) -> str | None:
    """The running parent run of this study (a worker started on another machine), if any."""
    from visreps.tracking import client, experiment_id

    found = client().search_runs([experiment_id(config.experiment)],
                                 f"tags.`visreps.stage` = '{STAGE}' and tags.`visreps.study` = '{config.study_name}' "
                                 "and attributes.status = 'RUNNING'", max_results=1, order_by=["start_time DESC"])
    return found[0].info.run_id if found else None


def planned_size(config: SweepConfig) -> dict[str, Any]:
    """Trials, trainings, labels runs and selection evaluations the sweep plans, and per-trial estimates of time
    and peak memory from measured runs (finished trials of this experiment, else finished training runs)."""
    points = config.grid_points() if config.sampler.type == "grid" else []
    trials = config.trials_planned()
    trained = {tuple(sorted((k, str(v)) for k, v in p.items() if k != "label_source")) + (
        ("source", FINE if p.get("label_source") == UNTRAINED else str(p.get("label_source", FINE))),)
        for p in points}
    sources = {str(p.get("label_source")) for p in points} - {FINE, UNTRAINED, "None"}
    selections = sum(1 for o in config.objectives if o.dataset)
    plan = {"trials": trials, "trainings": len(trained) if points else trials,
            "labels_runs": len(sources) if points else len(config.label_sources),
            "selection_evaluations": trials * selections, "workers": config.workers}
    plan.update(_measured(config))
    if plan.get("seconds_per_trial"):
        plan["estimated_hours"] = round(plan["seconds_per_trial"] * trials / 3600.0 / max(config.workers, 1), 2)
    return plan


def _measured(config: SweepConfig) -> dict[str, Any]:
    from visreps.tracking import stage_runs

    trials, _ = stage_runs(TRIAL_STAGE, config.experiment)
    seconds = [run.metrics["trial_seconds"] for run in trials if "trial_seconds" in run.metrics]
    memory = [run.metrics["peak_rss_mb"] for run in trials if "peak_rss_mb" in run.metrics]
    if seconds:
        return {"seconds_per_trial": float(pd.Series(seconds).median()), "peak_rss_mb": float(max(memory or [0])),
                "estimate_from": f"{len(seconds)} finished trials in {config.experiment}"}
    trainings, _ = stage_runs("train", config.experiment)
    train_seconds = [run.metrics["train_seconds"] for run in trainings if "train_seconds" in run.metrics]
    if train_seconds:
        return {"seconds_per_trial": float(pd.Series(train_seconds).median()), "peak_rss_mb": None,
                "estimate_from": f"{len(train_seconds)} finished trainings (training only; memory not measured)"}
    return {"seconds_per_trial": None, "peak_rss_mb": None,
            "estimate_from": "no measured runs yet: run one trial first (n_trials=1) to get an estimate"}


def plan_text(plan: dict[str, Any]) -> str:
    hours = f", ≈ {plan['estimated_hours']} h with {plan['workers']} worker(s)" if plan.get("estimated_hours") else ""
    per_trial = (f"≈ {plan['seconds_per_trial']:.0f} s per trial" if plan.get("seconds_per_trial") else "time unknown")
    memory = f", peak {plan['peak_rss_mb']:.0f} MB" if plan.get("peak_rss_mb") else ""
    return (f"sweep plan: {plan['trials']} trials, {plan['trainings']} trainings, {plan['labels_runs']} labels runs, "
            f"{plan['selection_evaluations']} selection evaluations; {per_trial}{memory}{hours} "
            f"(from {plan['estimate_from']})")


def _start_workers(config: SweepConfig, parent_run_id: str, folder: Path) -> list[subprocess.Popen]:
    """``config.workers`` worker processes of this sweep (the same resolved configuration)."""
    path = folder / "sweep.yaml"
    path.write_text(to_yaml(config.model_copy(update={"worker": True})))
    command = [sys.executable, "-m", "visreps.cli", "sweep", "--config", str(path), "--parent-run-id", parent_run_id]
    return [subprocess.Popen(command, env={**os.environ, "VISREPS_SWEEP_WORKER": str(index)})
            for index in range(config.workers)]


def _wait(workers: list[subprocess.Popen], poll_s: float = 1.0) -> list[int]:
    """Wait for every worker, reaping each as it ends (a killed worker must not linger as a zombie that looks
    alive to the others); returns the exit codes that were not 0."""
    codes: dict[int, int] = {}
    while len(codes) < len(workers):
        for index, worker in enumerate(workers):
            if index not in codes and worker.poll() is not None:
                codes[index] = worker.returncode
        time.sleep(poll_s)
    return [code for code in codes.values() if code != 0]


def run_sweep_stage(config: SweepConfig, parent_run_id: str | None = None) -> str:
    """Check, create the study, plan, run the workers, summarise; returns the sweep's parent run id."""
    from visreps.sweeps.study import create_study, is_done, redact, wait_for_study
    from visreps.tracking import ensure_tracking_available, reusable_run, stage_run

    ensure_tracking_available()
    check_configs(config)
    url = storage_url(config)
    study = create_study(config, url)
    inputs = {"storage": redact(url)}
    previous = reusable_run(STAGE, config, STAGE_VERSION, inputs, config.force) if is_done(study, config) else None
    if previous is not None:
        return previous.run_id  # a finished study: every trial's runs are already there
    plan = planned_size(config)
    print(plan_text(plan))
    tags = {"visreps.study": config.study_name, "visreps.storage": redact(url), "visreps.sampler": config.sampler.type}
    with stage_run(STAGE, config, STAGE_VERSION, tags=tags, run_name=f"sweep-{config.study_name}", resume=True,
                   parent_run_id=parent_run_id, inputs=inputs) as run:
        run.log_dict(plan, "plan.json")
        with tempfile.TemporaryDirectory() as folder:
            failed = _wait(_start_workers(config, run.run_id, Path(folder)))
        if not config.workers:
            wait_for_study(study, config)
        _summarise(run, study, config)
        if failed and not is_done(study, config):
            raise SweepError(f"{len(failed)} worker(s) stopped with an error (printed above) and the study is not "
                             "done; fix the cause and run the same command again: finished trials are kept")
        if config.evaluate_best:
            _evaluate_best(run, study, config)
    return run.run_id


def _summarise(run, study, config: SweepConfig) -> None:
    """Trials table, best trials, objectives, parameter importances and their figures into the parent run."""
    from visreps.figures import export_figures, importance_figure, sweep_history_figure
    from visreps.sweeps.study import best_trials, param_importances, trials_table

    table = trials_table(study, config)
    run.log_table(table, "trials.csv")
    best = [trial.number for trial in best_trials(study)]
    run.log_table(table[table.number.isin(best)], "best_trials.csv")
    objectives = pd.DataFrame([{"objective": o.key, "direction": o.direction} for o in config.objectives])
    run.log_table(objectives, "objectives.csv")
    importances = param_importances(study, config)
    counts = table.state.value_counts().to_dict()
    run.log_metrics({f"trials_{state.lower()}": float(count) for state, count in counts.items()})
    figures = {f"history_{o.objective}": sweep_history_figure(table, o.objective, o.direction)
               for o in objectives.itertuples() if ((table.state == "COMPLETE") & table[o.objective].notna()).any()}
    if len(importances):
        run.log_table(importances, "importances.csv")
        figures["importances"] = importance_figure(importances)
    with tempfile.TemporaryDirectory() as folder:
        export_figures(figures, folder, ["html"])
        run.log_artifacts(folder, "figures")
    print(f"sweep {config.study_name}: {counts}; best trials {best}")


def _evaluate_best(run, study, config: SweepConfig) -> None:
    """Full (test-split) evaluations of the best trials' networks on every evaluate dataset, after the search."""
    from visreps.stages.evaluate import run_evaluate_stage
    from visreps.sweeps.study import best_trials
    from visreps.tracking import complete_runs

    for trial in best_trials(study)[: config.evaluate_best]:
        found = [r for r in complete_runs(config.experiment, {"visreps.stage": TRIAL_STAGE,
                                                             "visreps.study": config.study_name})
                 if r.tags.get("visreps.trial_number") == str(trial.number)]
        if not found:
            continue
        untrained = trial.params.get("label_source") == UNTRAINED
        model = f"runs:/{found[0].tags['visreps.train_run_id']}/{'model_epoch0' if untrained else 'model'}"
        for dataset in config.evaluate:
            for analysis, run_id in run_evaluate_stage(_evaluate_config(config, dataset, model),
                                                            parent_run_id=run.run_id).items():
                print(f"sweep: best trial {trial.number} evaluated on {dataset} ({analysis}): run {run_id}")
