"""Preprocessing cache: fingerprints, atomic writes, and reuse by the NSD reader."""

from __future__ import annotations

import os

import numpy as np
import pytest

import visreps.data.published.nsd as nsd_module
from visreps.data import open_dataset
from visreps.data.cache import PreprocessCache, fingerprint

try:
    from .published_fixtures import build_nsd, build_tvsd, visreps_home  # noqa: F401
except ImportError:
    from published_fixtures import build_nsd, build_tvsd, visreps_home  # noqa: F401


def test_fingerprint_tracks_files_and_options(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"12345")
    first = fingerprint([source], {"sessions": [1, 2]})
    assert fingerprint([source], {"sessions": [1, 2]}) == first
    assert fingerprint([source], {"sessions": [1]}) != first
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert fingerprint([source], {"sessions": [1, 2]}) != first
    touched = fingerprint([source], {"sessions": [1, 2]})
    source.write_bytes(b"123456")
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert fingerprint([source], {"sessions": [1, 2]}) != touched


def test_entries_are_written_atomically(visreps_home, monkeypatch):
    cache = PreprocessCache("unit")
    arrays = {"a": np.arange(3), "b": np.ones((2, 2), np.float32), "ids": np.array(["x", "y"])}
    calls = []
    real_save = np.save

    def failing_save(path, array, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted half-way
        return real_save(path, array, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        cache.save("entry", arrays, {"note": 1})
    monkeypatch.setattr(np, "save", real_save)
    assert cache.load("entry") is None
    assert list(cache.folder.iterdir()) == []  # nothing half-written is left behind
    entry = cache.save("entry", arrays, {"note": 1})
    assert cache.folder == visreps_home / "cache" / "unit"
    assert entry.meta["note"] == 1 and entry.array("ids").tolist() == ["x", "y"]
    np.testing.assert_array_equal(cache.load("entry").array("b", mmap=True), arrays["b"])
    (entry.folder / "b.npy").unlink()
    assert cache.load("entry") is None  # an entry missing an array is not complete


def test_second_nsd_load_reads_the_cache(tmp_path, visreps_home, monkeypatch):
    root = tmp_path / "nsd"
    build_nsd(root, subjects=("subj01",), constant_voxel=False)
    first = open_dataset("nsd", root, regions=["V1", "PPA"]).responses("subj01", "PPA")
    entries = list((visreps_home / "cache" / "nsd").glob("subj01-*"))
    assert len(entries) == 1

    def no_betas(*args, **kwargs):
        raise AssertionError("betas were read although the cache holds them")

    monkeypatch.setattr(nsd_module, "read_betas_voxels", no_betas)
    second = open_dataset("nsd", root, regions=["V1", "PPA"]).responses("subj01", "PPA")
    np.testing.assert_array_equal(first.train, second.train)
    np.testing.assert_array_equal(first.test_repetitions, second.test_repetitions)
    np.testing.assert_array_equal(first.train_ids, second.train_ids)
    with pytest.raises(AssertionError, match="betas were read"):  # other options -> another entry
        open_dataset("nsd", root, regions=["V1"]).responses("subj01", "V1")
    betas = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.hdf5"
    stat = betas.stat()
    os.utime(betas, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="betas were read"):  # changed source -> recomputed
        open_dataset("nsd", root, regions=["V1", "PPA"]).responses("subj01", "PPA")


def test_cache_can_be_disabled(tmp_path, visreps_home):
    root = tmp_path / "tvsd"
    build_tvsd(root, nan_electrode=None)
    open_dataset("tvsd", root, cache=False).responses("monkeyN", "V1")
    assert not (visreps_home / "cache" / "tvsd").exists()
    open_dataset("tvsd", root).responses("monkeyN", "V1")
    assert len(list((visreps_home / "cache" / "tvsd").glob("monkeyN-*"))) == 1
