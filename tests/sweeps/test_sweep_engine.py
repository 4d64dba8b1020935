"""The Optuna engine with plain objectives (no training): pruning through the report callback, multi-objective
Pareto fronts, the trials table, and the end of a non-grid study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from visreps.config import load_config
from visreps.figures import importance_figure, sweep_history_figure
from visreps.paths import project_root
from visreps.sweeps.config import SweepConfig
from visreps.sweeps.study import best_trials, create_study, param_importances, run_worker, trials_table


def _config(tmp_path: Path, *overrides: str) -> tuple[SweepConfig, str]:
    config = load_config(SweepConfig, "sweep", config_file=project_root() / "configs/sweep/demo_grid.yaml",
                         overrides=overrides)
    return config, f"sqlite:///{tmp_path / 'optuna.db'}"


def test_the_report_callback_prunes_a_trial_below_the_median(tmp_path: Path) -> None:
    config, url = _config(tmp_path, "sampler.type=random", "n_trials=4", "pruner.type=median",
                          "pruner.n_startup_trials=1", "pruner.n_warmup_steps=0",
                          "objectives=[{name: heldout_accuracy}]",
                          "search_space={seed: {choices: [1, 2, 3, 4]}}")
    curves = iter([[0.5, 0.6, 0.7], [0.1, 0.1, 0.1], [0.6, 0.7, 0.8], [0.05, 0.05, 0.05]])
    reached = []

    def objective(params, report, number):
        curve = next(curves)
        for epoch, value in enumerate(curve):
            report(epoch, value)  # raises TrainingStopped when the median pruner says so
            reached.append((number, epoch))
        return [curve[-1]]

    study = create_study(config, url)
    assert run_worker(study, config, objective) == 4
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.PRUNED) == 2 and states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert (1, 1) not in reached and (3, 1) not in reached, "a pruned trial stops at the epoch it was pruned"
    assert [t.number for t in best_trials(study)] == [2]


def test_multi_objective_study_has_a_pareto_front_table_and_figures(tmp_path: Path) -> None:
    config, url = _config(tmp_path, "objectives=[{name: heldout_accuracy}, {name: selection_rsa, dataset: demo}]")
    values = {("pca_pixels", 2): [0.9, 0.1], ("pca_pixels", 8): [0.7, 0.3], ("fine", None): [0.3, 0.2],
              ("untrained", None): [0.1, 0.05]}

    def objective(params, report, number):
        return values[(params["label_source"], params.get("K"))]

    study = create_study(config, url)
    run_worker(study, config, objective)
    front = {(t.params["label_source"], t.params.get("K")) for t in best_trials(study)}
    assert front == {("pca_pixels", 2), ("pca_pixels", 8)}
    table = trials_table(study, config)
    assert list(table.state) == ["COMPLETE"] * 4 and {"heldout_accuracy", "selection_rsa.demo"} <= set(table)
    assert table.set_index("label_source").loc["fine", "selection_rsa.demo"] == pytest.approx(0.2)
    importances = param_importances(study, config)
    assert set(importances.objective) == {"heldout_accuracy", "selection_rsa.demo"}
    assert importances.groupby("objective").importance.sum().to_numpy() == pytest.approx([1.0, 1.0])
    history = sweep_history_figure(table, "selection_rsa.demo", "minimize")
    assert list(history.data[1].y) == [0.1, 0.1, 0.1, 0.05], "best so far of a minimised objective, in trial order"
    assert len(importance_figure(importances).data) == 2
