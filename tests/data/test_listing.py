"""The stored listing of class-folder trees: same answer as a walk, re-walked exactly when a folder changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from visreps.data.base import DatasetError
from visreps.data.images import scan_class_folders
from visreps.data.listing import list_class_folders, listing_path
from visreps.data.images import IMAGE_EXTENSIONS
from visreps.fingerprints import files_fingerprint
from visreps.labels.tables import collection_fingerprint


def _tree(root: Path) -> Path:
    for label in range(3):
        folder = root / f"n{label:08d}"
        folder.mkdir(parents=True)
        for index in range(4):
            (folder / f"img_{index}.JPEG").write_bytes(bytes([label, index]) * (index + 1))
        (folder / "notes.txt").write_text("not an image")
    return root


def _same(a, b) -> None:
    assert a.keys == b.keys and a.class_names == b.class_names and a.root == b.root
    np.testing.assert_array_equal(a.fine_labels, b.fine_labels)
    np.testing.assert_array_equal(a.file_stats, b.file_stats)


def _bump_folder_time(folder: Path) -> None:
    """Give ``folder`` a modification time it did not have (file systems with coarse clocks)."""
    stat = folder.stat()
    os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_listing_matches_the_walk_and_is_read_back(tmp_path):
    root, store = _tree(tmp_path / "tree"), tmp_path / "listings"
    store.mkdir()
    first = list_class_folders(root, cache_folder=store)
    _same(first, scan_class_folders(root.resolve()))
    assert len(first) == 12 and first.file_stats[:, 0].tolist()[:4] == [2, 4, 6, 8]
    assert listing_path(root.resolve(), IMAGE_EXTENSIONS, store).is_file()
    _same(list_class_folders(root, cache_folder=store), first)
    # the fingerprint from the listed stats is the one a fresh stat of every file gives
    assert collection_fingerprint(first) == files_fingerprint(first.root, first.keys)


def _keep_folder_time(folder: Path, stat: os.stat_result) -> None:
    os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_stored_listing_is_used_until_a_folder_changes(tmp_path):
    root, store = _tree(tmp_path / "tree"), tmp_path / "listings"
    store.mkdir()
    before = list_class_folders(root, cache_folder=store)
    folder = root / "n00000001"
    folder_time = folder.stat()
    (folder / "img_7.JPEG").write_bytes(b"hidden")  # a new file whose folder time is put back: the names are
    _keep_folder_time(folder, folder_time)           # the stored ones, so the tree was not walked
    target = folder / "img_0.JPEG"
    size = target.stat().st_size
    target.write_bytes(b"rewritten in place, longer")  # an in-place rewrite leaves the folder's time alone
    _keep_folder_time(folder, folder_time)
    trusted = list_class_folders(root, cache_folder=store, listing="trust")
    assert collection_fingerprint(trusted) == collection_fingerprint(before)  # trust: the documented limit
    checked = list_class_folders(root, cache_folder=store)  # check (default): the rewrite is seen ...
    assert checked.keys == before.keys and "n00000001/img_7.JPEG" not in checked.keys  # ... without a walk
    assert collection_fingerprint(checked) != collection_fingerprint(before)
    assert checked.file_stats[checked.keys.index("n00000001/img_0.JPEG"), 0] == 26 != size
    _same(list_class_folders(root, cache_folder=store, listing="trust"), checked)  # the re-read times were stored
    fresh = list_class_folders(root, cache_folder=store, listing="rescan")
    assert "n00000001/img_7.JPEG" in fresh.keys
    _same(fresh, scan_class_folders(root.resolve()))
    with pytest.raises(ValueError, match="listing must be one of"):
        list_class_folders(root, cache_folder=store, listing="never")

    (root / "n00000002" / "img_9.JPEG").write_bytes(b"new")  # adding a file changes its folder's time
    _bump_folder_time(root / "n00000002")
    assert "n00000002/img_9.JPEG" in list_class_folders(root, cache_folder=store).keys
    shutil.rmtree(root / "n00000000")  # removing a class folder changes the root's time
    _bump_folder_time(root)
    after = list_class_folders(root, cache_folder=store)
    assert after.class_names == ("n00000001", "n00000002")
    _same(after, scan_class_folders(root.resolve()))


def test_unreadable_listing_is_walked_again(tmp_path):
    root, store = _tree(tmp_path / "tree"), tmp_path / "listings"
    store.mkdir()
    first = list_class_folders(root, cache_folder=store)
    listing_path(root.resolve(), IMAGE_EXTENSIONS, store).write_bytes(b"truncated")
    _same(list_class_folders(root, cache_folder=store), first)
    folder, folder_time = root / "n00000002", (root / "n00000002").stat()
    os.unlink(folder / "img_3.JPEG")  # a listed file gone, its folder's time put back: walked again
    _keep_folder_time(folder, folder_time)
    assert "n00000002/img_3.JPEG" not in list_class_folders(root, cache_folder=store).keys
    with pytest.raises(DatasetError, match="does not exist"):
        list_class_folders(tmp_path / "missing", cache_folder=store)
