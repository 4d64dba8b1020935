"""`visreps datasets check <name> --root PATH`: verify a dataset download and say what is there.

Exit status 0 when the dataset opens and every file checks out, 1 when a file is missing or malformed (the
message names it, relative to the root), 2 for a usage error (unknown dataset or option), 141 when the output is
piped into a reader that stops early (``| head``; nothing more is printed). ``--json`` prints
one JSON object; ``--deep`` also preprocesses every subject and region (filling the cache) for exact counts.
For NSD the report names the sessions used per subject; a gap in a subject's sessions fails the check (the
message names the missing files), fewer sessions than published is a warning line.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from visreps.data import DATASET_CLASSES, DatasetError, dataset_name, open_dataset
from visreps.paths import PathError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``check`` subcommand to the ``datasets`` parser."""
    commands = parser.add_subparsers(dest="datasets_command", metavar="COMMAND")
    commands.required = True
    check = commands.add_parser(
        "check", help="verify a dataset download and print what it offers",
        description="Open a dataset where it lies, check every required file, and print its subjects, "
                    "regions, unit counts and stimuli (or name the first missing/malformed file).",
    )
    check.add_argument("name", help=f"dataset name: {', '.join(sorted(DATASET_CLASSES))} (any case; - or _)")
    check.add_argument("--root", required=True, help="folder of the dataset as downloaded")
    check.add_argument("--json", action="store_true", help="print a machine-readable JSON summary")
    check.add_argument("--deep", action="store_true",
                       help="also preprocess every subject and region (slow for NSD; fills the cache)")
    check.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="dataset option, repeatable (e.g. --option sessions=1-4 --option regions=V1,FFA); "
                            "values are parsed as YAML (numbers, true/false, [lists])")


def parse_options(items: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> {k: YAML-parsed v}; ValueError naming a malformed item."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {item!r} is not KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def _option_names(name: str) -> list[str]:
    import importlib

    module, cls = DATASET_CLASSES[name].split(":")
    parameters = inspect.signature(getattr(importlib.import_module(module), cls).__init__).parameters
    return [p for p in parameters if p not in ("self", "root") and parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def summarise(name: str, root: str, options: dict[str, Any], deep: bool) -> dict[str, Any]:
    """Open the dataset and return its summary (raises DatasetError)."""
    dataset = open_dataset(name, root, **options)
    summary_method = dataset.summary
    if "deep" in inspect.signature(summary_method).parameters:
        return summary_method(deep=deep)
    return summary_method()


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines of a dataset summary."""
    lines = [f"{summary['name']} ({summary['kind']}{', test only' if summary.get('test_only') else ''}): OK"]
    if summary.get("root"):
        lines.append(f"  root: {summary['root']}")
    lines.append(f"  stimuli: {summary['n_stimuli']}" + (f" ({summary['n_images']} images)" if "n_images" in summary else ""))
    for subject, regions in summary["subjects"].items():
        first = next(iter(regions.values()), None)
        split = "" if first is None else (
            f"train {first['n_train']}, test {first['n_test']}"
            + ("" if not first.get("n_repetitions") else f" (up to {first['n_repetitions']} repetitions)")
        )
        sessions = summary.get("sessions", {}).get(subject)
        if sessions:
            split += f"; sessions {_number_ranges(sessions['used'])} ({len(sessions['used'])} of {sessions['published']})"
        lines.append(f"  {subject}: {split}")
        width = max((len(r) for r in regions), default=0)
        for region, record in regions.items():
            lines.append(f"    {region.ljust(width)}  {record['n_units']:>7} units")
    for warning in summary.get("warnings", []):
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def _number_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    values = sorted(int(n) for n in numbers)
    starts = [n for k, n in enumerate(values) if k == 0 or values[k - 1] != n - 1]
    ends = [n for k, n in enumerate(values) if k == len(values) - 1 or values[k + 1] != n + 1]
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in zip(starts, ends))


def run(args: argparse.Namespace) -> int:
    """Run ``datasets check``; returns the process exit status."""
    if getattr(args, "datasets_command", "check") != "check":
        print(f"unknown datasets command {args.datasets_command!r}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"dataset": args.name, "root": str(args.root)}
    try:
        args.name = dataset_name(args.name)
        options = parse_options(args.option)
        known = _option_names(args.name)
        unknown = [key for key in options if key not in known]
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r} for {args.name}; its options are: {', '.join(known)}")
    except (ValueError, ImportError) as error:  # DatasetError is a ValueError: an unknown name is a usage error
        return _fail(args, report, str(error), status=2)
    try:
        summary = summarise(args.name, args.root, options, bool(getattr(args, "deep", False)))
    except (DatasetError, PathError) as error:
        return _fail(args, report, str(error), status=1)
    if args.json:
        print(json.dumps({"ok": True, **report, "options": _jsonable(options), "summary": _jsonable(summary)}, indent=1))
    else:
        print(format_summary(summary))
    return 0


def _fail(args: argparse.Namespace, report: dict[str, Any], message: str, status: int) -> int:
    if args.json:
        print(json.dumps({"ok": False, **report, "error": message}, indent=1))
    else:
        print(f"{args.name}: FAILED\n  {message}", file=sys.stderr)
    return status
