"""The preprocessing cache of the dataset readers.

An entry is a folder ``cache_dir(<dataset>)/<label>-<fingerprint>/`` with one ``.npy`` file per array and a
``meta.json``. The fingerprint hashes the source files (resolved path, size, mtime) and the preprocessing
options, so a changed download or option gives a new entry. Entries are written into a temporary folder and
renamed into place (atomic on one file system): an interrupted preprocessing never looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from visreps.paths import cache_dir

#: bump when the preprocessing of any reader changes, so old entries are not reused
CACHE_FORMAT_VERSION = 1
_META = "meta.json"
_STALE_TEMP_SECONDS = 24 * 3600


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def fingerprint(files: Iterable[str | Path], options: Mapping[str, Any]) -> str:
    """sha256 (hex) of each file's resolved path, size and mtime (ns) plus the options (JSON, sorted keys)."""
    digest = hashlib.sha256()
    digest.update(f"visreps-cache-v{CACHE_FORMAT_VERSION}\n".encode())
    for file in files:
        path = Path(file).resolve()
        try:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{path}\0missing\n".encode())
    digest.update(json.dumps(_jsonable(options), sort_keys=True).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """A complete cache entry: ``meta`` (JSON) and its arrays, read on demand."""

    folder: Path
    meta: dict[str, Any]

    def array(self, name: str, mmap: bool = False) -> np.ndarray:
        """One stored array (memory-mapped read-only when ``mmap``)."""
        return np.load(self.folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)

    def names(self) -> list[str]:
        return list(self.meta["arrays"])


class PreprocessCache:
    """Cache entries of one dataset under ``visreps.paths.cache_dir(dataset)``."""

    def __init__(self, dataset: str, folder: str | Path | None = None):
        self.dataset = dataset
        self._folder = Path(folder) if folder is not None else None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = cache_dir(self.dataset)
        return self._folder

    def key(self, label: str, files: Iterable[str | Path], options: Mapping[str, Any]) -> str:
        """Entry name: ``label`` plus the first 24 hex digits of the fingerprint."""
        return f"{label}-{fingerprint(files, options)[:24]}"

    def load(self, key: str) -> CacheEntry | None:
        """The complete entry ``key``, or None (absent, or missing a listed array)."""
        folder = self.folder / key
        try:
            meta = json.loads((folder / _META).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None
        if not all((folder / f"{name}.npy").is_file() for name in meta.get("arrays", [])):
            return None
        return CacheEntry(folder, meta)

    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> CacheEntry:
        """Write an entry atomically (temporary folder, then rename); returns the stored entry."""
        self._remove_stale_temporaries()
        temporary = self.folder / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        temporary.mkdir(parents=True)
        try:
            for name, array in arrays.items():
                np.save(temporary / f"{name}.npy", np.asarray(array), allow_pickle=False)
            full_meta = {**_jsonable(dict(meta)), "arrays": sorted(arrays), "created": time.time()}
            (temporary / _META).write_text(json.dumps(full_meta, indent=1))
            target = self.folder / key
            try:
                os.rename(temporary, target)
            except OSError:
                # another process completed the same entry first: keep theirs
                if self.load(key) is None:
                    raise
                shutil.rmtree(temporary, ignore_errors=True)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        entry = self.load(key)
        assert entry is not None
        return entry

    def _remove_stale_temporaries(self) -> None:
        now = time.time()
        for path in self.folder.glob(".tmp-*"):
            try:
                if now - path.stat().st_mtime > _STALE_TEMP_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
            except FileNotFoundError:
                continue
