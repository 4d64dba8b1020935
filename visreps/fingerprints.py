"""Fingerprints of what a stage reads: file contents, file trees and network weights.

Each function returns the first 16 hex digits of a SHA-256; equal fingerprints mean equal inputs.
- ``content_fingerprint``: the bytes of one file (label tables, small inputs);
- ``files_fingerprint`` / ``tree_fingerprint``: relative path, size and modification time (ns) of every file
  of a set or a tree, so adding, removing or rewriting any file changes it without reading the contents
  (image trees, datasets); ``stats_fingerprint`` gives the same digest from stats taken already;
- ``state_dict_fingerprint``: names, dtypes, shapes and bytes of a network's tensors.
``visreps.tracking.identity`` combines them into run keys (see ``docs/reuse.md``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Mapping

import torch

_CHUNK = 1 << 20


def content_fingerprint(path: str | Path) -> str:
    """SHA-256 (16 hex) of the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def files_fingerprint(root: str | Path, relative_paths: Iterable[str]) -> str:
    """SHA-256 (16 hex) of ``path<TAB>size<TAB>mtime_ns`` of each file under ``root`` (in the given order).

    A missing file is an error (``FileNotFoundError`` names it): a fingerprint never silently skips one.
    """
    root = Path(root)
    relative_paths = list(relative_paths)
    stats = [os.stat(root / relative) for relative in relative_paths]
    return stats_fingerprint(relative_paths, [stat.st_size for stat in stats], [stat.st_mtime_ns for stat in stats])


def stats_fingerprint(relative_paths: Iterable[str], sizes: Iterable[int], mtimes_ns: Iterable[int]) -> str:
    """``files_fingerprint`` from stats taken already (a cached listing): the same digest for the same stats."""
    digest = hashlib.sha256()
    for relative, size, mtime in zip(relative_paths, sizes, mtimes_ns, strict=True):
        digest.update(f"{relative}\t{int(size)}\t{int(mtime)}\n".encode())
    return digest.hexdigest()[:16]


def tree_files(root: str | Path) -> list[str]:
    """Sorted POSIX paths (relative to ``root``) of every regular file below ``root``, hidden ones included."""
    root = Path(root)
    found = []
    for folder, _, names in os.walk(root):
        base = Path(folder).relative_to(root)
        found.extend((base / name).as_posix() for name in names if (Path(folder) / name).is_file())
    return sorted(found)


def tree_fingerprint(root: str | Path) -> str:
    """``files_fingerprint`` of every file below ``root`` (a dataset folder): any added, removed or rewritten
    file changes it."""
    return files_fingerprint(root, tree_files(root))


def state_dict_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (16 hex) of each tensor's name, dtype, shape and bytes, in name order (device-independent)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\t{tensor.dtype}\t{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
