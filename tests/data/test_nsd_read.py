"""Voxel reads of NSD beta files against a plain full-volume read, for every layout the reader meets."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from visreps.data import DatasetError, open_dataset
from visreps.data.published.nsd_read import betas_layout, read_betas_voxels, zyx_order
from visreps.data.published.preprocess import read_session_voxels

try:
    from .published_fixtures import build_nsd, visreps_home  # noqa: F401
except ImportError:
    from published_fixtures import build_nsd, visreps_home  # noqa: F401

N_TRIALS, VOLUME = 40, (7, 6, 5)  # (X, Y, Z); h5py shape (40, 5, 6, 7)


def write_betas(path, data, **options):
    with h5py.File(path, "w") as handle:
        handle.create_dataset("betas", data=data, **options)
    return path


@pytest.fixture(scope="module")
def betas():
    rng = np.random.default_rng(7)
    return rng.integers(-32768, 32767, size=(N_TRIALS, *VOLUME[::-1]), dtype=np.int16, endpoint=True)


def full_volume_read(path, xyz):
    """The straightforward reference: the whole (trials, Z, Y, X) array, then the voxels, ÷ 300 in float32."""
    with h5py.File(path, "r") as handle:
        volume = handle["betas"][()]
    return volume[:, xyz[:, 2], xyz[:, 1], xyz[:, 0]].astype(np.float32) / np.float32(300)


def region_voxels(seed=3, fraction=0.3):
    rng = np.random.default_rng(seed)
    return np.argwhere(rng.random(VOLUME) < fraction)  # (n, 3) X, Y, Z in argwhere (X-major) order


@pytest.mark.parametrize("options,layout", [
    ({"chunks": (N_TRIALS, 1, 1, 1)}, "voxel-raw"),
    ({"chunks": (N_TRIALS, 1, 1, 1), "compression": "gzip", "shuffle": True}, "voxel"),
    ({"chunks": (1, *VOLUME[::-1])}, "box"),
    ({"chunks": (N_TRIALS, 2, 2, 2)}, "box"),
    ({}, "box"),
])
def test_every_layout_equals_a_full_volume_read(tmp_path, betas, options, layout):
    path = write_betas(tmp_path / "betas.hdf5", betas, **options)
    with h5py.File(path, "r") as handle:
        assert betas_layout(handle["betas"], N_TRIALS) == layout
    xyz = region_voxels()
    got = read_betas_voxels(path, xyz, N_TRIALS, VOLUME, "test")
    assert got.dtype == np.float32 and got.shape == (N_TRIALS, len(xyz))
    np.testing.assert_array_equal(got, full_volume_read(path, xyz))
    np.testing.assert_array_equal(got, read_session_voxels(path, xyz, N_TRIALS, VOLUME, "test"))  # the old path


def test_forced_strategies_agree_on_voxel_chunks(tmp_path, betas):
    path = write_betas(tmp_path / "betas.hdf5", betas, chunks=(N_TRIALS, 1, 1, 1))
    xyz = region_voxels(seed=5)[::-1]  # any input order: columns follow xyz
    results = [read_betas_voxels(path, xyz, N_TRIALS, VOLUME, "t", layout=name) for name in ("voxel-raw", "voxel", "box")]
    for result in results:
        np.testing.assert_array_equal(result, full_volume_read(path, xyz))
    gz = write_betas(tmp_path / "gz.hdf5", betas, chunks=(N_TRIALS, 1, 1, 1), compression="gzip")
    with pytest.raises(ValueError, match="voxel-raw cannot read"):
        read_betas_voxels(gz, xyz, N_TRIALS, VOLUME, "t", layout="voxel-raw")


def test_big_endian_and_unwritten_chunks(tmp_path, betas):
    big = write_betas(tmp_path / "big.hdf5", betas.astype(">i2"), chunks=(N_TRIALS, 1, 1, 1))
    xyz = region_voxels(seed=8)
    np.testing.assert_array_equal(read_betas_voxels(big, xyz, N_TRIALS, VOLUME, "t"), full_volume_read(big, xyz))
    path = tmp_path / "holes.hdf5"
    with h5py.File(path, "w") as handle:  # one voxel's chunk is never written: HDF5 gives the fill value
        ds = handle.create_dataset("betas", shape=betas.shape, dtype=np.int16, chunks=(N_TRIALS, 1, 1, 1), fillvalue=-7)
        for z in range(VOLUME[2]):
            block = betas[:, z]
            ds[:, z, 1:] = block[:, 1:]
            ds[:, z, 0, 1:] = block[:, 0, 1:]
    xyz = np.argwhere(np.ones(VOLUME, bool))
    got = read_betas_voxels(path, xyz, N_TRIALS, VOLUME, "t")
    np.testing.assert_array_equal(got, full_volume_read(path, xyz))
    hole = np.flatnonzero((xyz[:, 0] == 0) & (xyz[:, 1] == 0))
    assert np.all(got[:, hole] == np.float32(-7) / np.float32(300))


def test_shape_dtype_and_empty_selection(tmp_path, betas):
    path = write_betas(tmp_path / "betas.hdf5", betas, chunks=(N_TRIALS, 1, 1, 1))
    assert read_betas_voxels(path, np.zeros((0, 3)), N_TRIALS, VOLUME, "t").shape == (N_TRIALS, 0)
    with pytest.raises(DatasetError, match=r"expected \(40, 6, 5, 7\)"):
        read_betas_voxels(path, region_voxels(), N_TRIALS, (7, 5, 6), "t")
    floats = write_betas(tmp_path / "f.hdf5", betas.astype(np.float32), chunks=(N_TRIALS, 1, 1, 1))
    with pytest.raises(DatasetError, match="expected int16"):
        read_betas_voxels(floats, region_voxels(), N_TRIALS, VOLUME, "t")


def test_zyx_order_follows_the_file():
    xyz = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [2, 0, 0]])
    assert xyz[zyx_order(xyz)].tolist() == [[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_fixture_is_chunked_like_the_published_files(tmp_path):
    root = tmp_path / "nsd"
    build_nsd(root, subjects=("subj01",), n_sessions=1)
    path = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.hdf5"
    with h5py.File(path, "r") as handle:
        assert handle["betas"].chunks == (750, 1, 1, 1) and handle["betas"].compression is None
        assert betas_layout(handle["betas"], 750) == "voxel-raw"


def test_responses_do_not_depend_on_the_chunking(tmp_path):
    """The whole NSD preprocessing gives bit-identical arrays from per-voxel and per-trial chunked files."""
    results = {}
    for chunks in ("voxel", "trial"):
        root = tmp_path / chunks
        build_nsd(root, subjects=("subj01",), betas_chunks=chunks)
        dataset = open_dataset("nsd", root, regions=["V1", "FFA", "ventral"], cache=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fixture's constant voxel
            results[chunks] = [dataset.responses("subj01", region) for region in dataset.regions()]
    for a, b in zip(results["voxel"], results["trial"]):
        np.testing.assert_array_equal(a.train, b.train)
        np.testing.assert_array_equal(a.test_repetitions, b.test_repetitions)
        np.testing.assert_array_equal(a.info["voxel_xyz"], b.info["voxel_xyz"])
