"""Typed configuration: precedence, YAML quirks, clear errors naming the key, hashing, flattening."""

from __future__ import annotations

from pathlib import Path

import pytest

from visreps.config import (
    ConfigError, ConfigModel, config_hash, flatten_config, load_config, read_yaml, runtime_field, to_yaml,
)


class Optimiser(ConfigModel):
    lr: float = 5e-4
    weight_decay: float = 1e-3
    ks: list[int] = [2, 4]


class StageConfig(ConfigModel):
    seed: int = 1
    name: str = "base"
    use_amp: bool = False
    num_workers: int = runtime_field(0)
    optimiser: Optimiser = Optimiser()


@pytest.fixture()
def defaults(tmp_path: Path) -> Path:
    path = tmp_path / "default.yaml"
    path.write_text("seed: 2\noptimiser:\n  lr: 1e-3\n")
    return path


def test_precedence_defaults_then_file_then_overrides(tmp_path: Path, defaults: Path) -> None:
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("seed: 3\nname: from-file\n")
    config = load_config(StageConfig, "x", config_file=experiment, overrides=["seed=4"], defaults_file=defaults)
    assert config.seed == 4
    assert config.name == "from-file"
    assert config.optimiser.lr == pytest.approx(1e-3)
    assert config.optimiser.weight_decay == pytest.approx(1e-3)  # untouched field default


def test_scientific_notation_without_dot_is_a_float(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optimiser:\n  lr: 1e-3\n  weight_decay: 5E+2\n")
    assert read_yaml(path)["optimiser"] == {"lr": 0.001, "weight_decay": 500.0}
    config = load_config(StageConfig, "x", config_file=path, defaults_file=tmp_path / "none.yaml")
    assert isinstance(config.optimiser.lr, float) and config.optimiser.lr == 0.001


def test_override_values_are_typed(defaults: Path) -> None:
    config = load_config(
        StageConfig, "x", overrides=["optimiser.ks=[8,16]", "use_amp=true", "optimiser.lr=2e-4"], defaults_file=defaults
    )
    assert config.optimiser.ks == [8, 16]
    assert config.use_amp is True
    assert config.optimiser.lr == pytest.approx(2e-4)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["optimiser.lx=1"], "'optimiser.lx'"),
        (["sed=1"], "'sed'"),
        (["seed=abc"], "'seed'"),
        (["optimiser.ks=[a]"], "optimiser.ks"),
        (["seed"], "key=value"),
        (["=3"], "empty key"),
    ],
)
def test_bad_overrides_name_the_key(overrides: list[str], fragment: str, defaults: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(StageConfig, "x", overrides=overrides, defaults_file=defaults)
    assert fragment in str(caught.value)


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path, defaults: Path) -> None:
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("optimiser:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"optimiser\.learning_rate.*experiment\.yaml"):
        load_config(StageConfig, "x", config_file=experiment, defaults_file=defaults)


def test_wrong_type_in_file_names_key_and_origin(tmp_path: Path, defaults: Path) -> None:
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("seed: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"'seed' \(from .*experiment\.yaml\)"):
        load_config(StageConfig, "x", config_file=experiment, defaults_file=defaults)


def test_unreadable_and_missing_yaml(tmp_path: Path, defaults: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(StageConfig, "x", config_file=broken, defaults_file=defaults)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(StageConfig, "x", config_file=tmp_path / "missing.yaml", defaults_file=defaults)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(StageConfig, "x", config_file=scalar, defaults_file=defaults)


def test_hash_ignores_fields_that_do_not_affect_results() -> None:
    base = StageConfig()
    assert config_hash(base) == config_hash(StageConfig(num_workers=8))
    assert config_hash(base) != config_hash(StageConfig(seed=2))
    assert config_hash(base) != config_hash(StageConfig(optimiser=Optimiser(lr=1e-4)))


def test_flatten_and_yaml_round_trip() -> None:
    config = StageConfig(seed=7)
    flat = flatten_config(config)
    assert flat["seed"] == 7
    assert flat["optimiser.lr"] == 5e-4
    assert flat["optimiser.ks"] == [2, 4]
    assert StageConfig.model_validate(__import__("yaml").safe_load(to_yaml(config))) == config


def test_validate_assignment_rejects_wrong_type() -> None:
    config = StageConfig()
    with pytest.raises(Exception):
        config.seed = "many"  # type: ignore[assignment]


def test_every_stage_default_file_loads() -> None:
    """Each configs/<stage>/default.yaml matches its stage's schema (no stale keys)."""
    import importlib

    from visreps.cli import COMMANDS
    from visreps.paths import project_root

    checked = 0
    for stage, module_name in COMMANDS.items():
        default = project_root() / "configs" / stage / "default.yaml"
        if not default.is_file():
            continue
        module = importlib.import_module(module_name)
        if stage == "sweep":  # its defaults have no search space: every sweep file gives one
            for experiment in sorted((project_root() / "configs" / stage).glob("*.yaml")):
                if experiment.name != "default.yaml":
                    load_config(module.CONFIG_CLASS, stage, config_file=experiment)
        else:
            load_config(module.CONFIG_CLASS, stage)
        checked += 1
    assert checked >= 1


def _stage_config_classes() -> dict[str, type]:
    import importlib

    from visreps.cli import COMMANDS

    modules = {name: importlib.import_module(module) for name, module in COMMANDS.items()}
    return {name: module.CONFIG_CLASS for name, module in modules.items() if hasattr(module, "CONFIG_CLASS")}


def test_every_stage_default_file_agrees_with_its_config_class() -> None:
    from visreps.paths import project_root

    classes = _stage_config_classes()
    assert set(classes) == {"demo_data", "labels", "train", "evaluate", "compare", "pipeline", "score", "sweep", "figures",
                            "server", "image_cache"}
    for stage, schema in classes.items():
        path = project_root() / "configs" / stage / "default.yaml"
        assert path.is_file(), f"{path} is missing"
        # model_construct: the defaults as declared (a sweep's default has no search space, which it refuses)
        from_file, from_class = flatten_config(read_yaml(path)), flatten_config(schema.model_construct())
        assert from_file == from_class, f"{path} disagrees with {schema.__name__}: " + str(
            {key: (from_file.get(key), from_class.get(key)) for key in set(from_file) | set(from_class)
             if from_file.get(key) != from_class.get(key)})


def test_tracked_stages_share_one_base_and_one_runtime_marker() -> None:
    from visreps.config import StageConfig, affects_result
    from visreps.paths import project_root

    for stage, schema in _stage_config_classes().items():
        if stage in ("score", "figures", "server", "image_cache"):  # files or a server only: nothing tracked
            continue
        assert issubclass(schema, StageConfig), stage
        assert not affects_result(schema, "experiment") and not affects_result(schema, "force")
    marker = [str(path.relative_to(project_root())) for path in (project_root() / "visreps").rglob("*.py")
              if "\"affects_result\":" in path.read_text() and path.name != "loading.py"]
    assert marker == [], f"mark result-free fields with visreps.config.runtime_field, not by hand: {marker}"


def test_package_version_is_the_project_version() -> None:
    import tomllib

    import visreps
    from visreps.paths import project_root

    project = tomllib.loads((project_root() / "pyproject.toml").read_text())["project"]
    assert visreps.__version__ == project["version"]
