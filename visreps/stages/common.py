"""What every configurable stage shares: its command-line arguments, loading its configuration, its device."""

from __future__ import annotations

import argparse
import shlex
from typing import TypeVar

from visreps.config import ConfigError, ConfigModel, load_config

ConfigT = TypeVar("ConfigT", bound=ConfigModel)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``, ``--overrides "k=v k2=v2"`` (one string, as MLflow passes it) and ``k=v`` positionals."""
    parser.add_argument("--config", default="", metavar="FILE",
                        help="experiment YAML holding only the differences from configs/<stage>/default.yaml")
    parser.add_argument("--overrides", default="", metavar="'K=V ...'",
                        help="overrides as one string (how `mlflow run -P overrides=...` passes them)")
    parser.add_argument("override", nargs="*", metavar="KEY=VALUE",
                        help="overrides, dotted keys for nesting (e.g. train.lr=1e-3 ks=[2,4,8])")


def stage_config(schema: type[ConfigT], stage: str, args: argparse.Namespace) -> ConfigT:
    """Resolve the stage configuration from defaults, ``--config`` and all overrides."""
    overrides = shlex.split(args.overrides or "") + list(args.override or [])
    return load_config(schema, stage, config_file=args.config or None, overrides=overrides)


def compute_device(name: str, key: str = "device"):
    """``auto`` -> cuda when available, else cpu; anything else as given, checked to exist (``key`` names the
    setting in the error)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{key}={name} is not a device; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name} but no CUDA device is available; use {key}=auto or cpu")
    return device
