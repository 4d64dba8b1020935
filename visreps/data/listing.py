"""A stored listing of class-folder trees, so a 1.28 M-file ImageNet tree is not walked again for every run.

``list_class_folders(root, listing=...)`` returns what ``scan_class_folders`` returns (keys, folder classes and each
file's size and modification time), from ``cache_dir("image_listings")/<digest of root and extensions>.npz`` while
the tree's folders are unchanged: the root and every class folder keep the modification times (ns) recorded when
the listing was taken. Adding, removing or renaming a file changes its folder's time (so does replacing it the way
copy tools such as rsync do, through a rename), and the tree is walked again. ``listing``:

- ``check`` (default): the stored names, with every file's size and time read again (one ``os.stat`` per file,
  no directory walk; on a local disk that is most of a walk's cost, so this saves little there), so a file overwritten in place still changes the collection's fingerprint and no finished run
  is re-used for changed pixels;
- ``trust``: the stored names and times as they are, one stat per class folder (1,000 for ImageNet) — for network
  file systems where a million stats take minutes; a file overwritten in place then goes unnoticed;
- ``rescan``: walk the tree again whatever is stored.

Folder times are read before the walk, so a tree that changes during a walk is walked again next time. Costs:
benchmarks/README.md, "ImageNet-size data".
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Literal

import numpy as np

from visreps.data.base import DatasetError
from visreps.data.images import IMAGE_EXTENSIONS, ImageCollection, scan_class_folders
from visreps.paths import cache_dir

#: bump when the stored layout changes, so old listings are not read
LISTING_FORMAT_VERSION = 1
LISTING_MODES = ("check", "trust", "rescan")
ListingMode = Literal["check", "trust", "rescan"]


def folder_stamps(root: Path) -> dict[str, int]:
    """Modification time (ns) of ``root`` (key ``""``) and of each of its non-hidden sub-folders (by name)."""
    stamps = {"": root.stat().st_mtime_ns}
    for entry in os.scandir(root):
        if entry.is_dir() and not entry.name.startswith("."):
            stamps[entry.name] = entry.stat().st_mtime_ns
    return stamps


def listing_path(root: Path, extensions: tuple[str, ...], folder: Path | None = None) -> Path:
    """Where the listing of ``root`` (resolved) with ``extensions`` is stored."""
    digest = hashlib.sha256(json.dumps([str(root), list(extensions)]).encode()).hexdigest()[:24]
    return (folder if folder is not None else cache_dir("image_listings")) / f"{digest}.npz"


def _text(values) -> np.ndarray:
    return np.frombuffer("\n".join(values).encode(), dtype=np.uint8)


def _lines(blob: np.ndarray) -> list[str]:
    text = blob.tobytes().decode()
    return text.split("\n") if text else []


def write_listing(path: Path, collection: ImageCollection, stamps: dict[str, int], extensions: tuple[str, ...]) -> None:
    """Store ``collection`` and the folder ``stamps`` atomically (temporary file, then rename); a tree with a
    newline in a file name is not stored (the stored layout separates names by newlines)."""
    if any("\n" in name for name in (*collection.keys, *collection.class_names)):
        return
    meta = {"version": LISTING_FORMAT_VERSION, "root": str(collection.root), "extensions": list(extensions)}
    temporary = path.with_name(f".{path.stem}-{uuid.uuid4().hex[:8]}.npz")
    try:
        with open(temporary, "wb") as handle:
            np.savez(handle, meta=_text([json.dumps(meta)]), keys=_text(collection.keys),
                     labels=collection.fine_labels.astype(np.int64), stats=collection.file_stats,
                     class_names=_text(collection.class_names), stamp_names=_text(stamps),
                     stamp_times=np.asarray(list(stamps.values()), dtype=np.int64))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_listing(path: Path, root: Path, stamps: dict[str, int], extensions: tuple[str, ...]) -> ImageCollection | None:
    """The stored collection when it was taken of ``root`` with ``extensions`` and the folder times are
    ``stamps``; None otherwise (absent, unreadable, another layout version, or the tree changed)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(_lines(stored["meta"])[0])
            if meta != {"version": LISTING_FORMAT_VERSION, "root": str(root), "extensions": list(extensions)}:
                return None
            if dict(zip(_lines(stored["stamp_names"]), stored["stamp_times"].tolist())) != stamps:
                return None
            keys, labels, stats = tuple(_lines(stored["keys"])), stored["labels"], stored["stats"]
            class_names = tuple(_lines(stored["class_names"]))
    except (OSError, ValueError, KeyError, IndexError, EOFError):
        return None
    if len(keys) != len(labels) or stats.shape != (len(keys), 2):
        return None
    return ImageCollection(root, keys, labels, class_names, stats)


def class_folder_root(text: str, key: str) -> Path:
    """The class-folder tree a setting ``key`` names (resolved); ``demo``: the default demo dataset's
    ``train_images``. DatasetError when it is not set, or the demo has not been generated."""
    root = text.strip()
    if not root:
        raise DatasetError(f"{key} is not set; pass {key}=/path/to/class-folder-tree or {key}=demo")
    if root == "demo":
        from visreps.data.demo import DemoDataConfig, default_demo_root

        folder = default_demo_root(DemoDataConfig()) / "train_images"
        if not folder.is_dir():
            raise DatasetError(f"the demo dataset is not at {folder}; run `visreps demo_data` first")
        return folder
    return Path(root).expanduser().resolve()


def file_stats(root: Path, keys: tuple[str, ...]) -> np.ndarray | None:
    """(N, 2) int64 size and modification time (ns) of ``root/key`` for every key; None when a file has gone.
    One plain ``os.stat`` per string path: on a local disk threads and ``Path`` objects only add overhead."""
    base = f"{root}{os.sep}"
    try:
        stats = [os.stat(base + key) for key in keys]
    except FileNotFoundError:
        return None
    return np.asarray([(stat.st_size, stat.st_mtime_ns) for stat in stats], dtype=np.int64).reshape(-1, 2)


def list_class_folders(root: str | Path, *, listing: ListingMode = "check",
                       extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
                       cache_folder: str | Path | None = None) -> ImageCollection:
    """``scan_class_folders(root)``, from the stored listing while the tree's folders are unchanged; ``listing``
    check | trust | rescan as the module says. Raises DatasetError when ``root`` is missing or holds no images."""
    if listing not in LISTING_MODES:
        raise ValueError(f"listing must be one of {', '.join(LISTING_MODES)}, got {listing!r}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist; set the dataset root to a class-folder tree")
    stamps = folder_stamps(root)
    path = listing_path(root, extensions, None if cache_folder is None else Path(cache_folder))
    stored = read_listing(path, root, stamps, extensions) if listing != "rescan" else None
    if stored is not None and listing == "trust":
        return stored
    if stored is not None:
        stats = file_stats(root, stored.keys)
        if stats is not None:
            if not np.array_equal(stats, stored.file_stats):
                stored = ImageCollection(root, stored.keys, stored.fine_labels, stored.class_names, stats)
                write_listing(path, stored, stamps, extensions)
            return stored
    collection = scan_class_folders(root, extensions)
    write_listing(path, collection, stamps, extensions)
    return collection
