"""The layering rule of CONTRIBUTING.md, enforced on every import (module level and inside functions).

Ranks, lowest first: the bottom modules (errors, config, paths, fingerprints) 0, alignment 1 (a pure leaf: it
imports only rank 0 and itself), data 1, models 2, activations 3, labels 4, training 5, tracking 6, the sweep
module 7, stages and cli 8, ``entrypoints/`` and ``dashboards/`` 9. A file may import only modules of its own
rank or lower; only ``visreps/tracking/`` imports ``mlflow``, only the sweep module imports ``optuna``.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED_FOLDERS = ("visreps", "entrypoints", "dashboards")
BOTTOM_MODULES = ("errors", "config", "paths", "fingerprints")
PACKAGE_RANKS = {"alignment": 1, "figures": 1, "data": 1, "models": 2, "activations": 3, "labels": 4, "training": 5,
                 "tracking": 6, "sweeps": 7, "stages": 8, "cli": 8}
TOP_RANK = 9
TRACKING_PACKAGE = "tracking"
SWEEP_PACKAGE = "sweeps"


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.imported} ({self.rule})"


def module_name(relative: Path) -> str:
    """``visreps/models/files.py`` -> ``visreps.models.files``; ``visreps/models/__init__.py`` -> ``visreps.models``."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``; ``from visreps import x`` gives ``visreps.x``."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "visreps" or (node.level and not node.module):
                found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, target))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def rank_of(parts: list[str]) -> int | None:
    """Rank of ``visreps.<parts>``; None for modules outside the table (a new top-level module: an error)."""
    if not parts:
        return 0
    if parts[0] in BOTTOM_MODULES or parts[0] == "__version__":  # visreps/__init__.py imports nothing
        return 0
    return PACKAGE_RANKS.get(parts[0])


def file_rank(relative: Path) -> tuple[int | None, str]:
    """(rank, first package below visreps) of a scanned file."""
    if relative.parts[0] != "visreps":
        return TOP_RANK, relative.parts[0]
    parts = module_name(relative).split(".")[1:]
    return rank_of(parts), (parts[0] if parts else "")


def check_file(path: Path, relative: Path) -> list[Violation]:
    """Every layering violation of one file (relative to the scanned root)."""
    rank, package = file_rank(relative)
    name = relative.as_posix()
    if rank is None:
        return [Violation(name, 1, module_name(relative), "module not in the layer table of tests/test_layers.py")]
    violations = []
    for line, imported in imported_modules(path.read_text(), module_name(relative), path.name == "__init__.py"):
        top = imported.split(".")[0]
        if top == "mlflow" and package != TRACKING_PACKAGE:
            violations.append(Violation(name, line, imported, "only visreps/tracking imports mlflow"))
        elif top == "optuna" and package != SWEEP_PACKAGE:
            violations.append(Violation(name, line, imported, "only the sweep module imports optuna"))
        elif top == "visreps":
            parts = imported.split(".")[1:]
            target_rank = rank_of(parts)
            target = parts[0] if parts else "visreps"
            if target_rank is None:
                violations.append(Violation(name, line, imported, "module not in the layer table"))
            elif package == "alignment" and target_rank != 0 and target != "alignment":
                violations.append(Violation(name, line, imported, "alignment imports only the bottom modules"))
            elif target_rank > rank:
                violations.append(Violation(name, line, imported, f"rank {rank} ({package}) imports rank "
                                                                  f"{target_rank} ({target})"))
    return violations


def find_violations(root: Path) -> list[Violation]:
    """Layering violations of every .py file under ``root``'s visreps/, entrypoints/ and dashboards/."""
    violations = []
    for folder in SCANNED_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            violations.extend(check_file(path, path.relative_to(root)))
    return violations


def test_the_project_keeps_its_layers() -> None:
    violations = find_violations(ROOT)
    assert not violations, "layering violations (see CONTRIBUTING.md, Layers):\n" + "\n".join(map(str, violations))


def _write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


def test_the_checker_reports_each_kind_of_violation(tmp_path: Path) -> None:
    _write(tmp_path, "visreps/errors.py", "class VisrepsError(Exception): ...\n")
    _write(tmp_path, "visreps/models/__init__.py", "from .files import load\nfrom ..labels import tables\n")
    _write(tmp_path, "visreps/models/files.py", """\
        import torch
        from visreps.errors import VisrepsError

        def load(uri):
            from visreps.tracking.registry import fetch_checkpoint
            return fetch_checkpoint(uri)
        """)
    _write(tmp_path, "visreps/data/reader.py", "import mlflow.artifacts\nfrom visreps import models\n")
    _write(tmp_path, "visreps/alignment/rdm.py", "from visreps.data.base import DatasetError\n"
                                                 "from visreps.alignment import compare\n")
    _write(tmp_path, "visreps/training/search.py", "import optuna\n")
    _write(tmp_path, "visreps/sweeps/run.py", "import optuna\nfrom visreps.tracking import stage_run\n")
    _write(tmp_path, "visreps/tracking/store.py", "import mlflow\nfrom visreps.models import load\n")
    _write(tmp_path, "visreps/stages/score.py", "import importlib\nimportlib.import_module('visreps.sweeps.run')\n")
    _write(tmp_path, "dashboards/app.py", "from visreps.stages import score\n")
    found = {(v.file, v.line, v.imported) for v in find_violations(tmp_path)}
    assert found == {
        ("visreps/models/__init__.py", 2, "visreps.labels"),
        ("visreps/models/files.py", 5, "visreps.tracking.registry"),
        ("visreps/data/reader.py", 1, "mlflow.artifacts"),
        ("visreps/data/reader.py", 2, "visreps.models"),
        ("visreps/alignment/rdm.py", 1, "visreps.data.base"),
        ("visreps/training/search.py", 1, "optuna"),
    }


def test_an_unknown_top_level_module_is_reported(tmp_path: Path) -> None:
    _write(tmp_path, "visreps/plots/figure.py", "from visreps.errors import VisrepsError\n")
    _write(tmp_path, "visreps/data/x.py", "from visreps.plots import figure\n")
    found = {(v.file, v.imported) for v in find_violations(tmp_path)}
    assert found == {("visreps/plots/figure.py", "visreps.plots.figure"), ("visreps/data/x.py", "visreps.plots")}
