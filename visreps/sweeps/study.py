"""The Optuna side of a sweep: storage, study, sampler and pruner, the worker loop, and the study's tables and
figures. The only module of visreps that imports Optuna.

The objective comes from the sweep stage as a plain function ``objective(params, report, trial_number)``
returning one value per objective; ``report(step, value)`` records an intermediate value and raises
``TrainingStopped`` when the pruner stops the trial, so training code sees a callback, never Optuna.

A grid is enqueued once, when the study is created (each point a waiting trial), and workers take waiting trials
until none is left: every point runs exactly once, however many workers join. Heartbeats mark a trial whose
worker died (SIGKILL, a lost node) as failed after ``grace_period`` seconds, and a retry callback enqueues its
parameters again (up to ``max_retries``); a worker waits for running trials of other workers before it leaves,
so a retried trial is never stranded.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
import pandas as pd

from visreps.sweeps.config import SweepConfig, SweepError
from visreps.tracking.store import redact  # storage URLs are printed and logged without a password
from visreps.training.errors import TrainingStopped

#: study user attribute holding the search space and objectives it was created with
SPACE_ATTRIBUTE = "visreps.search_space"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

Objective = Callable[[dict[str, Any], Callable[[int, float], None], int], list[float]]


def default_storage(home: Path) -> str:
    """The single-machine storage: an SQLite file under ``home`` (VISREPS_HOME)."""
    folder = home / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def open_storage(config: SweepConfig, url: str):
    """The study's storage with heartbeats and the retry of stale trials; SweepError when it cannot be reached."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats and retries
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=config.max_retries)
    try:
        if url.startswith("journal:///"):
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal://")))
        return optuna.storages.RDBStorage(url, heartbeat_interval=config.heartbeat_interval,
                                          grace_period=config.grace_period, heartbeat_stale_trial_callback=retry,
                                          engine_kwargs={"pool_pre_ping": True})
    except Exception as error:  # SQLAlchemy/driver errors: unreachable server, bad URL, missing driver
        raise SweepError(f"the sweep storage {redact(url)} cannot be used ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:300]}); start the database or fix storage=") from None


def _sampler(config: SweepConfig):
    sampler = config.sampler
    if sampler.type == "tpe":
        return optuna.samplers.TPESampler(seed=sampler.seed, n_startup_trials=sampler.n_startup_trials,
                                          multivariate=True)
    if sampler.type == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=sampler.seed)
    return optuna.samplers.RandomSampler(seed=sampler.seed)  # grid: every trial is enqueued with its parameters


def _pruner(config: SweepConfig):
    if config.pruner.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=config.pruner.n_startup_trials,
                                           n_warmup_steps=config.pruner.n_warmup_steps)
    if config.pruner.type == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def space_signature(config: SweepConfig) -> str:
    """The search space, objectives and sampler a study is bound to (JSON)."""
    return json.dumps({"search_space": {name: p.model_dump(mode="json") for name, p in config.search_space.items()},
                       "objectives": [o.model_dump(mode="json") for o in config.objectives],
                       "sampler": config.sampler.type}, sort_keys=True)


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def create_study(config: SweepConfig, url: str) -> optuna.Study:
    """Create (or load) the study, bound to its search space; enqueue the grid points it does not hold yet.
    SweepError when a study of that name exists with another search space."""
    storage = open_storage(config, url)
    directions = [objective.direction for objective in config.objectives]
    study = _load_or_create(storage, config, directions)
    bound = study.user_attrs.get(SPACE_ATTRIBUTE)
    signature = space_signature(config)
    if bound is None:
        study.set_user_attr(SPACE_ATTRIBUTE, signature)
    elif bound != signature:
        raise SweepError(f"study {config.study_name!r} in {redact(url)} was created with another search space, "
                         f"objectives or sampler ({_difference(bound, signature)}); use a new study_name (finished "
                         "trainings and evaluations are re-used) or the original configuration")
    if config.sampler.type == "grid":
        held = {_key(trial.params) for trial in study.get_trials(deepcopy=False)
                if trial.state != optuna.trial.TrialState.FAIL} | {
            _key(trial.system_attrs.get("fixed_params", {})) for trial in study.get_trials(deepcopy=False)
            if trial.state == optuna.trial.TrialState.WAITING}
        for point in config.grid_points():
            if _key(point) not in held:
                study.enqueue_trial(point, skip_if_exists=False)
    return study


def _load_or_create(storage, config: SweepConfig, directions: list[str]) -> optuna.Study:
    try:
        study = optuna.load_study(study_name=config.study_name, storage=storage, sampler=_sampler(config),
                                  pruner=_pruner(config))
    except KeyError:
        return optuna.create_study(study_name=config.study_name, storage=storage, sampler=_sampler(config),
                                   pruner=_pruner(config), directions=directions, load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise SweepError(f"study {config.study_name!r} optimises {[d.name.lower() for d in study.directions]}, not "
                         f"{directions}; use a new study_name")
    return study


def _difference(bound: str, wanted: str) -> str:
    old, new = json.loads(bound), json.loads(wanted)
    changed = [key for key in sorted(set(old["search_space"]) | set(new["search_space"]))
               if old["search_space"].get(key) != new["search_space"].get(key)]
    parts = [f"parameters {changed} differ"] if changed else []
    parts += [f"{key} differ" for key in ("objectives", "sampler") if old[key] != new[key]]
    return "; ".join(parts) or "settings differ"


def load_study(config: SweepConfig, url: str, wait_s: float = 0.0) -> optuna.Study:
    """Join an existing study (a worker); waits up to ``wait_s`` for the launcher to create it."""
    storage = open_storage(config, url)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            study = optuna.load_study(study_name=config.study_name, storage=storage, sampler=_sampler(config),
                                      pruner=_pruner(config))
        except KeyError:
            if time.monotonic() >= deadline:
                raise SweepError(f"there is no study {config.study_name!r} in {redact(url)}; start the sweep with "
                                 "`visreps sweep` (without worker=true) first") from None
            time.sleep(1.0)
            continue
        if study.user_attrs.get(SPACE_ATTRIBUTE) not in (None, space_signature(config)):
            raise SweepError(f"study {config.study_name!r} was created with another search space; run the worker "
                             "with the launcher's configuration")
        return study


def suggest(trial: optuna.Trial, config: SweepConfig) -> dict[str, Any]:
    """The trial's parameters (an enqueued grid point's fixed values, or the sampler's choice)."""
    params: dict[str, Any] = {}
    for name, parameter in config.search_space.items():
        if name == "K" and not config.takes_k(params):
            continue  # fine and untrained networks have no K
        if parameter.type == "categorical":
            params[name] = trial.suggest_categorical(name, parameter.choices)
        elif parameter.type == "int":
            params[name] = trial.suggest_int(name, int(parameter.low), int(parameter.high), log=parameter.log,
                                             step=int(parameter.step or 1))
        else:
            params[name] = trial.suggest_float(name, parameter.low, parameter.high, log=parameter.log,
                                               step=None if parameter.log else parameter.step)
    return params


def _remaining(study: optuna.Study, config: SweepConfig) -> tuple[int, int, int]:
    """(waiting, running, still to finish) trials of the study."""
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
    running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    finished = sum(t.state in FINISHED for t in trials)
    return waiting, running, max(config.trials_planned() - finished, 0)


def run_worker(study: optuna.Study, config: SweepConfig, objective: Objective, poll_s: float = 2.0) -> int:
    """Run trials until the study is done (module docstring); returns how many trials this worker ran."""
    ran = 0

    def one_trial(trial: optuna.Trial) -> float | list[float]:
        params = suggest(trial, config)

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise TrainingStopped(f"pruned by the {config.pruner.type} pruner at epoch {step}")

        try:
            values = objective(params, report, trial.number)
        except TrainingStopped as stopped:
            raise optuna.TrialPruned(str(stopped)) from None
        return values[0] if len(values) == 1 else values

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its failed-trial warnings carry tracebacks; we print a line
    while True:
        waiting, running, left = _remaining(study, config)
        grid = config.sampler.type == "grid"
        if waiting or (not grid and left > running):
            study.optimize(one_trial, n_trials=1, callbacks=[_report_trial])
            ran += 1
        elif running:
            time.sleep(poll_s)  # other workers' trials: wait, and fail them if their heartbeat stops
            optuna.storages.fail_stale_trials(study)
        else:
            return ran


def is_done(study: optuna.Study, config: SweepConfig) -> bool:
    """No trial waiting or running, and (without a grid) ``n_trials`` finished."""
    waiting, running, left = _remaining(study, config)
    return not (waiting or running or (config.sampler.type != "grid" and left))


def wait_for_study(study: optuna.Study, config: SweepConfig, poll_s: float = 5.0) -> None:
    """Block until the study is done (workers elsewhere do the work); stale trials of dead workers are failed (and
    retried) meanwhile."""
    while not is_done(study, config):
        optuna.storages.fail_stale_trials(study)
        time.sleep(poll_s)


def _report_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    values = f" -> {[round(v, 4) for v in trial.values]}" if trial.values else ""
    print(f"sweep {study.study_name}: trial {trial.number} {trial.state.name.lower()} {trial.params}{values}", flush=True)


def trials_table(study: optuna.Study, config: SweepConfig) -> pd.DataFrame:
    """One row per trial: number, state, parameters, values per objective, retried trial, user attributes."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name, **trial.params}
        for index, objective in enumerate(config.objectives):
            row[objective.key] = trial.values[index] if trial.values else None
        row["retried_from"] = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
        row.update({key: value for key, value in trial.user_attrs.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The best trial (one objective) or the Pareto front (several)."""
    finished = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        return []
    return study.best_trials if len(study.directions) > 1 else [study.best_trial]


def param_importances(study: optuna.Study, config: SweepConfig) -> pd.DataFrame:
    """Per objective and varying parameter its fANOVA importance (shares summing to 1 per objective; seeded by
    ``config.sampler.seed``): columns objective, parameter, importance. Empty with < 2 complete trials or no
    parameter that varies between them."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    varying = [name for name in config.search_space if len({str(t.params.get(name)) for t in complete}) > 1]
    rows = []
    for index, objective in enumerate(config.objectives if len(complete) >= 2 and varying else []):
        target = (lambda t, i=index: t.values[i]) if len(config.objectives) > 1 else None
        shares = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=config.sampler.seed), target=target,
            params=varying)
        rows += [{"objective": objective.key, "parameter": name, "importance": float(share)} for name, share in shares.items()]
    return pd.DataFrame(rows, columns=["objective", "parameter", "importance"])
