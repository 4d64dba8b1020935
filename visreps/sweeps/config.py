"""The typed configuration of a sweep (defaults in configs/sweep/default.yaml): what a trial trains and evaluates,
the search space, the objectives, the sampler and pruner, and the study's storage.

A trial is one network: a label source and K (or the fine labels, or the untrained state of the fine network),
a seed, an architecture and training hyper-parameters, scored on **selection data only** (docs/sweeps.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from visreps.config import ConfigModel, StageConfig, StageSection, runtime_field
from visreps.errors import VisrepsError

#: search-space names that are not dotted train-config keys
STRUCTURAL = ("label_source", "K", "seed", "architecture")
#: label sources that need no labels run: folder classes, and the untrained (epoch-0) state of their network
FINE, UNTRAINED = "fine", "untrained"


class SweepError(VisrepsError, ValueError):
    """A sweep cannot start or join as configured; the message names the setting and the fix."""


class Parameter(ConfigModel):
    """One dimension of the search space: a categorical list, or an int/float range (optionally log-scaled)."""

    type: Literal["categorical", "int", "float"] = "categorical"
    choices: list[Any] = Field(default_factory=list, description="categorical values")
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, description="grid step of an int/float range (needed by the grid sampler)")

    @model_validator(mode="after")
    def _complete(self) -> "Parameter":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices: [...]")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"an {self.type} parameter needs low < high (got low={self.low}, high={self.high})")
        elif self.log and self.low <= 0:
            raise ValueError(f"a log-scaled parameter needs low > 0 (got {self.low})")
        return self

    def grid(self) -> list[Any] | None:
        """The values a grid visits; None for a continuous range without ``step``."""
        if self.type == "categorical":
            return list(self.choices)
        if self.step is None:
            return None
        values, value = [], float(self.low)
        while value <= float(self.high) + 1e-12:
            values.append(int(round(value)) if self.type == "int" else value)
            value += float(self.step)
        return values


class Objective(ConfigModel):
    """What a trial is scored by: ``heldout_accuracy`` of the training run, or a selection score on an evaluate
    dataset's **training** stimuli (``selection_rsa`` / ``selection_encoding``: mean over subjects and regions of
    the best point's score)."""

    name: Literal["heldout_accuracy", "selection_rsa", "selection_encoding"]
    dataset: str = Field("", description="evaluate dataset of a selection objective (e.g. demo, nsd)")
    direction: Literal["maximize", "minimize"] = "maximize"

    @field_validator("name", mode="before")
    @classmethod
    def _never_test(cls, value: Any) -> Any:
        if isinstance(value, str) and "test" in value.lower():
            raise ValueError(f"objective {value!r} would score the test split; a sweep only sees selection data "
                             "(selection_rsa, selection_encoding on training stimuli, or heldout_accuracy); test "
                             "scores come from `evaluate_best` runs after the search")
        return value

    @model_validator(mode="after")
    def _dataset(self) -> "Objective":
        if self.name.startswith("selection") and not self.dataset:
            raise ValueError(f"objective {self.name} needs dataset: <evaluate dataset> (its training stimuli)")
        return self

    @property
    def key(self) -> str:
        return f"{self.name}.{self.dataset}" if self.dataset else self.name


class Sampler(ConfigModel):
    type: Literal["grid", "tpe", "random", "nsga2"] = "grid"
    seed: int = Field(0, description="seed of the sampler (recorded; Optuna 5's default sampler is never used)")
    n_startup_trials: int = Field(10, ge=1, description="TPE: random trials before the model")


class Pruner(ConfigModel):
    type: Literal["none", "median", "hyperband"] = "none"
    n_startup_trials: int = Field(5, ge=0, description="median: trials before pruning starts")
    n_warmup_steps: int = Field(1, ge=0, description="median: epochs before a trial can be pruned")


class SweepConfig(StageConfig):
    """One Optuna study over networks (module docstring); every worker of the study runs the same config."""

    experiment: str = runtime_field("visreps-sweep")
    study_name: str = Field("visreps-sweep", description="the Optuna study (and the MLflow parent run's name)")
    storage: str = runtime_field("", description="sqlite:///file.db, journal:///file.log, postgresql://...; "
                                                 "'' = <VISREPS_HOME>/sweeps/optuna.db")
    train: StageSection = Field(default_factory=StageSection, description="every trial's training")
    label_sources: dict[str, StageSection] = Field(default_factory=dict, description="name -> labels stage config")
    evaluate: dict[str, StageSection] = Field(default_factory=dict, description="dataset -> evaluate config of the "
                                                                                "selection objectives")
    search_space: dict[str, Parameter] = Field(default_factory=dict, description="label_source, K, seed, "
                                               "architecture, or a dotted train key (e.g. lr, weight_decay)")
    objectives: list[Objective] = Field(default_factory=lambda: [Objective(name="heldout_accuracy")])
    sampler: Sampler = Field(default_factory=Sampler)
    pruner: Pruner = Field(default_factory=Pruner)
    n_trials: int = Field(0, ge=0, description="trials to finish (complete or pruned); 0 = the whole grid")
    max_retries: int = Field(2, ge=0, description="re-runs of a trial whose worker died (heartbeat stale)")
    heartbeat_interval: int = runtime_field(10, ge=1, description="seconds between a running trial's heartbeats")
    grace_period: int = runtime_field(660, ge=2, description="seconds without heartbeat before a trial is failed "
                                                              "(above the tracking layer's 600 s: docs/sweeps.md)")
    workers: int = runtime_field(1, ge=0, description="worker processes started on this machine (0: only create the "
                                                      "study and summarise it when workers elsewhere are done)")
    worker: bool = runtime_field(False, description="internal: this process is one worker of a started sweep")
    evaluate_best: int = runtime_field(0, ge=0, description="after the search: full (test-split) evaluations of the "
                                                            "best trials' networks on every evaluate dataset")
    force: bool = runtime_field(False)

    @field_validator("search_space")
    @classmethod
    def _not_empty(cls, value: dict[str, Parameter]) -> dict[str, Parameter]:
        if not value:
            raise ValueError("the search space is empty; give at least one parameter, e.g. K: {choices: [2, 8]}")
        if "label_source" in value:  # suggested first: K depends on it
            value = {"label_source": value["label_source"], **{k: v for k, v in value.items() if k != "label_source"}}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SweepConfig":
        sources = self.search_space.get("label_source")
        named = [s for s in (sources.choices if sources else []) if s not in (FINE, UNTRAINED)]
        missing = [s for s in named if s not in self.label_sources]
        if missing:
            raise ValueError(f"label_source choices {missing} have no label_sources entry (name -> labels config)")
        if named and "K" not in self.search_space:
            raise ValueError("coarse label sources need K in the search space (e.g. K: {choices: [2, 4, 8]})")
        for objective in self.objectives:
            if objective.dataset and objective.dataset not in self.evaluate:
                raise ValueError(f"objective {objective.key} names dataset {objective.dataset!r}, which has no "
                                 f"evaluate entry (have {sorted(self.evaluate) or 'none'})")
        if len(self.objectives) > 1 and self.pruner.type != "none":
            raise ValueError("a multi-objective study cannot prune (Optuna); set pruner.type=none")
        if self.sampler.type == "grid":
            continuous = [name for name, p in self.search_space.items() if p.grid() is None]
            if continuous:
                raise ValueError(f"the grid sampler cannot run continuous parameters {continuous}; give them a step "
                                 "or choices, or use sampler.type=tpe")
        elif self.n_trials == 0:
            raise ValueError(f"sampler {self.sampler.type} needs n_trials > 0 (only a grid has a natural end)")
        return self

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of the grid in a fixed order: the product of the parameters' values, where the fine and
        untrained label sources take no K (one point each per combination of the other parameters)."""
        points: list[dict[str, Any]] = [{}]
        for name, parameter in self.search_space.items():
            points = [{**point, name: value} for point in points for value in parameter.grid()]
        unique = {}
        for point in points:
            if point.get("label_source") in (FINE, UNTRAINED):
                point = {k: v for k, v in point.items() if k != "K"}
            unique.setdefault(repr(sorted(point.items())), point)
        return list(unique.values())

    def trials_planned(self) -> int:
        """Trials to finish: ``n_trials``, or the grid's points."""
        return self.n_trials or len(self.grid_points())

    def takes_k(self, params: dict[str, Any]) -> bool:
        """Whether a trial with these parameters has a K (coarse label sources do; fine and untrained do not)."""
        return "K" in self.search_space and params.get("label_source") not in (FINE, UNTRAINED)
