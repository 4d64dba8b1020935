"""Sweep configuration and study creation: the grid (fine and untrained take no K), the planned size, and every
bad input refused with one clear error before any trial starts (empty space, test objective, sampler that cannot
run the space, unreachable storage, a study name bound to another search space)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from visreps.cli import main
from visreps.config import ConfigError, load_config
from visreps.paths import project_root
from visreps.sweeps.config import SweepConfig, SweepError
from visreps.sweeps.study import SPACE_ATTRIBUTE, create_study, suggest


def _config(*overrides: str, file: str = "configs/sweep/demo_grid.yaml") -> SweepConfig:
    return load_config(SweepConfig, "sweep", config_file=project_root() / file, overrides=overrides)


def test_grid_points_give_fine_and_untrained_no_k() -> None:
    config = _config()
    points = config.grid_points()
    assert points == [{"label_source": "pca_pixels", "K": 2, "seed": 1}, {"label_source": "pca_pixels", "K": 8, "seed": 1},
                      {"label_source": "fine", "seed": 1}, {"label_source": "untrained", "seed": 1}]
    assert config.trials_planned() == 4
    paper = _config(file="configs/sweep/paper_grid.yaml")
    assert paper.trials_planned() == 4 * 6 * 3 + 3 + 3


def test_study_enqueues_the_grid_once_and_trials_take_its_points(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = _config("study_name=grid-once")
    study = create_study(config, url)
    again = create_study(config, url)  # a second launcher (or a restart) adds nothing
    waiting = [t for t in again.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 4 and len(study.get_trials()) == 4
    seen = []
    study.optimize(lambda trial: seen.append(suggest(trial, config)) or 0.0, n_trials=4)
    assert sorted(map(repr, seen)) == sorted(map(repr, config.grid_points()))
    assert study.user_attrs[SPACE_ATTRIBUTE]


def test_a_sweep_without_search_space_is_refused(capsys) -> None:
    with pytest.raises(ConfigError, match="search space is empty"):
        _config(file="configs/sweep/default.yaml")
    status = main(["sweep"])
    captured = capsys.readouterr()
    assert status != 0 and "search space is empty" in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize(("overrides", "fragment"), [
    (['objectives=[{name: test_rsa, dataset: demo}]'], "would score the test split"),
    (['objectives=[{name: selection_rsa, dataset: nowhere}]'], "has no evaluate entry"),
    (["search_space.lr={type: float, low: 0.0001, high: 0.01, log: true}"], "cannot run continuous parameters"),
    (["sampler.type=tpe"], "needs n_trials > 0"),
    (['search_space.label_source={choices: [pca_nowhere]}'], "no label_sources entry"),
    (['objectives=[{name: heldout_accuracy}, {name: selection_rsa, dataset: demo}]', "pruner.type=median"],
     "cannot prune"),
])
def test_bad_configurations_are_refused_naming_the_setting(overrides: list[str], fragment: str, capsys) -> None:
    with pytest.raises(ConfigError, match=fragment):
        _config(*overrides)
    status = main(["sweep", "--config", str(project_root() / "configs/sweep/demo_grid.yaml"), *overrides])
    captured = capsys.readouterr()
    assert status != 0 and fragment in captured.err and "Traceback" not in captured.err


def test_unreachable_storage_and_a_study_bound_to_another_space_are_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SweepError, match="cannot be used"):
        create_study(_config("storage=postgresql://postgres@127.0.0.1:1/test"), "postgresql://postgres@127.0.0.1:1/test")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(_config("study_name=bound"), url)
    with pytest.raises(SweepError, match=r"another search space.*K"):
        create_study(_config("study_name=bound", "search_space.K={choices: [2, 4]}"), url)
    status = main(["sweep", "--config", str(project_root() / "configs/sweep/demo_grid.yaml"),
                   "storage=postgresql://postgres:secret@127.0.0.1:1/test"])
    captured = capsys.readouterr()
    assert status != 0 and "cannot be used" in captured.err and "secret" not in captured.err
    assert "Traceback" not in captured.err


def test_a_worker_that_stops_with_an_error_ends_the_launcher_with_one_message(tmp_path: Path) -> None:
    """A trial whose training cannot start (no such image folder) stops its worker; the launcher does not wait
    forever for the remaining trials but says what happened, without a traceback."""
    import os
    import subprocess
    import sys

    missing = tmp_path / "no_images"
    command = [sys.executable, "-m", "visreps.cli", "sweep", "--config", "configs/sweep/demo_grid.yaml",
               f"storage=sqlite:///{tmp_path / 'optuna.db'}", "study_name=stops", "experiment=sweep-stops",
               'search_space={label_source: {choices: [fine, untrained]}, seed: {choices: [1]}}',
               "label_sources={}", f"train.overrides=[dataset.root={missing}]", "objectives=[{name: heldout_accuracy}]"]
    done = subprocess.run(command, cwd=project_root(), capture_output=True, text=True, timeout=240,
                          env={**os.environ, "VISREPS_HOME": str(tmp_path / "home")})
    assert done.returncode != 0
    assert str(missing) in done.stderr and "study is not done" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
