"""Where visreps keeps its files.

- ``project_root()``: the checkout holding ``configs/`` (the parent of this package), or ``VISREPS_PROJECT``.
- ``home()``: the working folder for the embedded tracking store, caches and generated demo data:
  ``VISREPS_HOME`` if set, else ``<project_root>/.visreps`` (git-ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

from visreps.errors import VisrepsError


class PathError(VisrepsError, RuntimeError):
    """A configured path is missing or not writable; the message says which and how to fix it."""


def project_root() -> Path:
    """The project folder whose ``configs/`` holds the default stage configurations."""
    configured = os.environ.get("VISREPS_PROJECT", "").strip()
    if configured:
        root = Path(configured).expanduser().resolve()
        if not (root / "configs").is_dir():
            raise PathError(f"VISREPS_PROJECT={configured!r} has no configs/ folder; point it at a visreps checkout")
        return root
    package_parent = Path(__file__).resolve().parent.parent
    if (package_parent / "configs").is_dir():
        return package_parent
    cwd = Path.cwd()
    if (cwd / "configs").is_dir():
        return cwd
    raise PathError(
        "cannot find the visreps configs/ folder: run from a visreps checkout or set VISREPS_PROJECT to one"
    )


def home() -> Path:
    """The visreps working folder (created on first use)."""
    configured = os.environ.get("VISREPS_HOME", "").strip()
    folder = Path(configured).expanduser().resolve() if configured else project_root() / ".visreps"
    return ensure_writable_dir(folder, "VISREPS_HOME")


def cache_dir(kind: str) -> Path:
    """A named cache folder under ``home()/cache`` (e.g. ``cache_dir("nsd")``)."""
    return ensure_writable_dir(home() / "cache" / kind, f"cache folder for {kind}")


def ensure_writable_dir(folder: str | Path, what: str) -> Path:
    """Create ``folder`` if needed and check it is writable; raise PathError naming ``what`` otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PathError(f"{what}: cannot create folder {folder} ({error.strerror}); choose a writable location") from None
    probe = folder / f".write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise PathError(
            f"{what}: folder {folder} is not writable ({error.strerror}); choose a writable location or fix its permissions"
        ) from None
    return folder
