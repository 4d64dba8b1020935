"""Loading, validating, hashing and flattening stage configurations (see ``visreps.config``)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticUndefined

from visreps.errors import VisrepsError
from visreps.paths import project_root


class ConfigError(VisrepsError, ValueError):
    """A configuration key, value or file is wrong; the message names it and says where it came from."""


def runtime_field(default: Any = PydanticUndefined, **options: Any) -> Any:
    """A field that does not affect results (worker counts, progress bars, devices, where runs are tracked):
    ``config_hash`` leaves it out, so changing it does not invalidate finished runs. Takes ``Field``'s options."""
    return Field(default, json_schema_extra={"affects_result": False}, **options)


def affects_result(model: type[BaseModel], name: str) -> bool:
    """Whether field ``name`` of ``model`` is part of the run identity (not declared with ``runtime_field``)."""
    extra = model.model_fields[name].json_schema_extra
    return not (isinstance(extra, dict) and extra.get("affects_result") is False)


class ConfigModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are validated on assignment.

    Fields declared with ``runtime_field`` are left out of ``config_hash``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class StageConfig(ConfigModel):
    """Base of every stage's configuration: what every stage has. A stage sets its own default experiment."""

    experiment: str = runtime_field("visreps", description="MLflow experiment of the stage's runs")
    force: bool = runtime_field(False, description="run again even if an identical run finished (the new run "
                                                   "supersedes it)")


class StageSection(ConfigModel):
    """How a composite stage (pipeline, sweep) configures one child stage: an experiment file and ``key=value``
    overrides on top of the child's defaults."""

    config: str = Field("", description="experiment file, relative to the project folder (or absolute)")
    overrides: list[str] = Field(default_factory=list, description="key=value overrides applied after the file")


ConfigT = TypeVar("ConfigT", bound=ConfigModel)


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` and ``5e+4`` as floats (YAML 1.1 insists on a dot)."""


_FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_YamlLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_PATTERN, list("-+0123456789."))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; raise ConfigError naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path given to --config")
    try:
        data = yaml.load(path.read_text(), Loader=_YamlLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """Read one override value as YAML (numbers, booleans, lists, null); plain text stays a string."""
    try:
        return yaml.load(text, Loader=_YamlLoader) if text.strip() else ""
    except yaml.YAMLError:
        return text


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[2,4]"]`` into a nested mapping ``{"a": {"b": 1}, "c": [2, 4]}``."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (dotted keys for nesting, e.g. train.lr=1e-3)")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        _set_dotted(nested, key.split("."), parse_value(value), origin=f"override {item!r}")
    return nested


def _set_dotted(target: dict[str, Any], parts: list[str], value: Any, origin: str) -> None:
    for depth, part in enumerate(parts[:-1]):
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {'.'.join(parts[: depth + 1])} is a value, not a section")
        target = child
    target[parts[-1]] = value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_known_keys(schema: type[BaseModel], data: dict[str, Any], origin: str, prefix: str = "") -> None:
    """Raise ConfigError for the first key of ``data`` that ``schema`` does not declare."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        field = schema.model_fields.get(key)
        if field is None:
            known = ", ".join(sorted(schema.model_fields))
            raise ConfigError(f"unknown config key {dotted!r} in {origin}; known keys here: {known}")
        annotation = field.annotation
        if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _check_known_keys(annotation, value, origin, prefix=f"{dotted}.")


def _validation_message(error: ValidationError, origins: dict[str, str]) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        given = item.get("input")
        origin = origins.get(key, "the configuration")
        lines.append(f"config key {key!r} (from {origin}): {item['msg']} (got {given!r})")
    return "; ".join(lines)


def _leaf_origins(data: dict[str, Any], origin: str, prefix: str = "") -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        found[dotted] = origin
        if isinstance(value, dict):
            found.update(_leaf_origins(value, origin, f"{dotted}."))
    return found


def load_config(
    schema: type[ConfigT],
    stage: str,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    defaults_file: str | Path | None = None,
) -> ConfigT:
    """Resolve the configuration of ``stage`` into an instance of ``schema``.

    ``defaults_file`` defaults to ``configs/<stage>/default.yaml`` under the project root (skipped if absent).
    """
    layers: list[tuple[dict[str, Any], str]] = []
    default_path = Path(defaults_file) if defaults_file else project_root() / "configs" / stage / "default.yaml"
    if default_path.is_file():
        layers.append((read_yaml(default_path), str(default_path)))
    if config_file:
        layers.append((read_yaml(config_file), str(config_file)))
    override_list = [item for item in overrides if item.strip()]
    if override_list:
        layers.append((parse_overrides(override_list), "command-line overrides"))

    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for data, origin in layers:
        _check_known_keys(schema, data, origin)
        merged = _merge(merged, data)
        origins.update(_leaf_origins(data, origin))
    try:
        return schema.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_validation_message(error, origins)) from None


def _hashable(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        if not affects_result(type(model), name):
            continue
        value = getattr(model, name)
        out[name] = _hashable(value) if isinstance(value, BaseModel) else value
    return out


def config_hash(config: BaseModel, length: int = 16) -> str:
    """Hex digest of the fields that affect results (canonical JSON, sorted keys)."""
    payload = json.dumps(_hashable(config), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def flatten_config(config: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten to dotted keys: ``{"train.lr": 0.0005, ...}`` (lists and None kept as values)."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def to_yaml(config: BaseModel) -> str:
    """The resolved configuration as YAML text (what is logged whole to each run)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
