"""Typed configuration: one pydantic model per stage, YAML defaults in ``configs/<stage>/``, overrides.

A run's configuration is resolved in this order, later winning:

1. the field defaults of the stage's model;
2. ``configs/<stage>/default.yaml``;
3. an experiment file (``--config FILE``) that holds only the differences;
4. ``key=value`` overrides (dotted keys for nesting, values read as YAML: ``lr=1e-3``, ``ks=[2,4,8]``).

Unknown keys and wrong types raise ``ConfigError`` naming the key and where it came from.
"""

from visreps.config.loading import (
    ConfigError,
    ConfigModel,
    StageConfig,
    StageSection,
    affects_result,
    config_hash,
    flatten_config,
    load_config,
    parse_overrides,
    read_yaml,
    runtime_field,
    to_yaml,
)

__all__ = [
    "ConfigError",
    "ConfigModel",
    "StageConfig",
    "StageSection",
    "affects_result",
    "config_hash",
    "flatten_config",
    "load_config",
    "parse_overrides",
    "read_yaml",
    "runtime_field",
    "to_yaml",
]
