"""The voxels of one NSD-style beta file, read without reading its volume.

Published NSD betas (``betas_sessionSS.hdf5``) hold ``betas``: int16 (percent signal change × 300), h5py shape
(n_trials, Z, Y, X), uncompressed, one chunk per voxel (h5py chunks (n_trials, 1, 1, 1); the NSD manual's
[1 1 1 750]). Such a file is read chunk by chunk: only the chunks of the requested voxels, in (Z, Y, X) order —
the order HDF5 lays chunks out when a volume is written whole — each copied as stored (``H5Dread_chunk``), with
no selection, chunk cache or bounding box. Layouts met elsewhere fall back:

- ``voxel-raw``: one unfiltered chunk per voxel -> direct chunk reads (the published files);
- ``voxel``: one chunk per voxel with filters (e.g. a compressed copy) -> one hyperslab read per voxel;
- ``box``: any other chunking or a contiguous dataset -> the bounding-box read of ``read_session_voxels``.

``benchmarks/bench_nsd_read.py`` measures the three on a session-sized file.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from visreps.data.base import DatasetError
from visreps.data.published.matfile import open_hdf5
from visreps.data.published.preprocess import NSD_BETA_SCALE, checked_betas, read_session_voxels


def betas_layout(betas: h5py.Dataset, n_trials: int) -> str:
    """``voxel-raw``, ``voxel`` or ``box``: how ``read_betas_voxels`` reads this (n_trials, Z, Y, X) dataset."""
    if betas.chunks is None or tuple(betas.chunks) != (n_trials, 1, 1, 1):
        return "box"
    return "voxel-raw" if betas.id.get_create_plist().get_nfilters() == 0 else "voxel"


def zyx_order(xyz: np.ndarray) -> np.ndarray:
    """Permutation of the (n, 3) X, Y, Z indices ``xyz`` that sorts them by Z, then Y, then X (file order)."""
    xyz = np.asarray(xyz).reshape(-1, 3)
    return np.lexsort((xyz[:, 0], xyz[:, 1], xyz[:, 2]))


def read_betas_voxels(path: str | Path, xyz: np.ndarray, n_trials: int, volume_xyz: tuple[int, int, int],
                      what: str, layout: str | None = None) -> np.ndarray:
    """(n_trials, n_voxels) float32 betas in percent signal change of the voxels ``xyz`` ((n, 3) X, Y, Z).

    The dataset ``betas`` must be integer with h5py shape (n_trials, Z, Y, X), the reverse of the masks' NIfTI
    (X, Y, Z). ``layout`` forces a strategy (``voxel-raw``/``voxel``/``box``; default: ``betas_layout``).
    Values equal ``read_session_voxels``' exactly; memory: the voxels' int16 + float32 copies only.
    """
    xyz = np.asarray(xyz, dtype=np.int64).reshape(-1, 3)
    with open_hdf5(path, what) as handle:
        betas = checked_betas(handle, path, n_trials, volume_xyz, what)
        chosen = layout or betas_layout(betas, n_trials)
        if chosen not in ("voxel-raw", "voxel", "box"):
            raise ValueError(f"layout must be voxel-raw, voxel or box, got {layout!r}")
        if chosen != "box":
            if chosen == "voxel-raw" and betas_layout(betas, n_trials) != "voxel-raw":
                raise ValueError(f"{path}: betas are not one unfiltered chunk per voxel; layout voxel-raw cannot read them")
            order = zyx_order(xyz)
            stored = np.empty((len(xyz), n_trials), dtype=betas.dtype)  # one row per voxel, in file order
            try:
                (_read_raw_chunks if chosen == "voxel-raw" else _read_hyperslabs)(betas, xyz[order], stored)
            except OSError as error:
                raise DatasetError(f"{what}: reading {path} failed ({error}); the file is truncated or corrupt") from None
    if chosen == "box":
        return read_session_voxels(path, xyz, n_trials, volume_xyz, what)
    out = np.empty((n_trials, len(xyz)), dtype=np.float32)
    out[:, order] = stored.T
    out /= NSD_BETA_SCALE
    return out


def _read_raw_chunks(betas: h5py.Dataset, xyz: np.ndarray, stored: np.ndarray) -> None:
    """Copy the stored chunk of each voxel ``xyz[i]`` into ``stored[i]`` (unfiltered: bytes = values)."""
    read_chunk = betas.id.read_direct_chunk
    raw = stored.view(np.uint8)
    for row, (x, y, z) in enumerate(xyz.tolist()):
        try:
            read_chunk((0, z, y, x), out=raw[row])
        except RuntimeError:  # the chunk was never written: HDF5 returns the fill value through a normal read
            stored[row] = betas[:, z, y, x]


def _read_hyperslabs(betas: h5py.Dataset, xyz: np.ndarray, stored: np.ndarray) -> None:
    """One (n_trials, 1, 1, 1) hyperslab read per voxel into ``stored[i]`` (HDF5 applies the filters)."""
    n_trials = stored.shape[1]
    space = betas.id.get_space()
    memory = h5py.h5s.create_simple((n_trials,))
    for row, (x, y, z) in enumerate(xyz.tolist()):
        space.select_hyperslab((0, z, y, x), (n_trials, 1, 1, 1))
        betas.id.read(memory, space, stored[row])
