"""Reading region voxels from one NSD session file: bounding box (old) vs per-voxel chunk reads (new).

Writes a format-faithful ``betas_session01.hdf5`` in a temporary folder: ``betas`` int16, h5py shape
(trials, Z, Y, X), uncompressed, one chunk per voxel (chunks (trials, 1, 1, 1)), written whole slab by slab as
a complete volume would be; default subj01's 1.8-mm volume, 750 × 83 × 104 × 81 (1.05 GB). Two region sets of
about the same voxel count: ``compact`` (one ellipsoid) and ``spanning`` (eight blobs near the corners, whose
bounding box covers most of the volume). Each is read with

- ``box``: ``preprocess.read_session_voxels``, the bounding box in blocks of trials (the reader before);
- ``voxel-raw``: ``nsd_read.read_betas_voxels`` on these files: each voxel's chunk copied as stored;
- ``voxel``: the same voxels as one hyperslab read each (the path for compressed per-voxel files),

cold (the file's pages dropped from the page cache with posix_fadvise before each read) and warm, and the
results are checked identical.

    python benchmarks/bench_nsd_read.py [--shape 81 104 83] [--trials 750] [--repeats 1] [--folder DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from visreps.data.published.nsd_read import read_betas_voxels
from visreps.data.published.preprocess import read_session_voxels


def write_session(path: Path, trials: int, volume_xyz: tuple[int, int, int], seed: int = 0) -> float:
    """Write the session file; returns seconds."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    x, y, z = volume_xyz
    with h5py.File(path, "w") as handle:
        betas = handle.create_dataset("betas", shape=(trials, z, y, x), dtype=np.int16, chunks=(trials, 1, 1, 1))
        for k in range(z):
            betas[:, k] = rng.integers(-3000, 3000, size=(trials, y, x), dtype=np.int16)
    return time.perf_counter() - start


def ellipsoid(volume_xyz, centre, radii) -> np.ndarray:
    """(n, 3) X, Y, Z indices inside the ellipsoid (centre and radii in fractions of the volume)."""
    shape = np.array(volume_xyz)
    grid = np.indices(volume_xyz).reshape(3, -1).T
    inside = (((grid - np.array(centre) * shape) / (np.array(radii) * shape)) ** 2).sum(axis=1) <= 1
    return grid[inside]


def region_sets(volume_xyz) -> dict[str, np.ndarray]:
    compact = ellipsoid(volume_xyz, (0.5, 0.25, 0.4), (0.16, 0.12, 0.12))
    corners = [ellipsoid(volume_xyz, (cx, cy, cz), (0.075, 0.06, 0.06))
               for cx in (0.12, 0.88) for cy in (0.12, 0.88) for cz in (0.12, 0.88)]
    spanning = np.unique(np.concatenate(corners), axis=0)
    return {"compact": compact, "spanning": spanning}


def drop_from_page_cache(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def timed(read, path: Path, cold: bool, repeats: int) -> tuple[float, np.ndarray]:
    best, values = float("inf"), None
    for _ in range(repeats):
        if cold:
            drop_from_page_cache(path)
        start = time.perf_counter()
        values = read()
        best = min(best, time.perf_counter() - start)
    return best, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(81, 104, 83), metavar=("X", "Y", "Z"))
    parser.add_argument("--trials", type=int, default=750)
    parser.add_argument("--repeats", type=int, default=1, help="timed reads per cell (the best is reported)")
    parser.add_argument("--folder", default=None, help="where to write the session file (default: a temporary folder)")
    args = parser.parse_args()
    volume, trials = tuple(args.shape), args.trials
    with tempfile.TemporaryDirectory(prefix="visreps-nsd-read-", dir=args.folder) as folder:
        path = Path(folder) / "betas_session01.hdf5"
        seconds = write_session(path, trials, volume)
        print(f"session file: {trials} trials x volume (X, Y, Z) {volume}, h5py shape {(trials, *volume[::-1])}, "
              f"chunks ({trials}, 1, 1, 1), {path.stat().st_size / 2**30:.2f} GiB (written in {seconds:.1f} s)")
        readers = {
            "box (old)": lambda xyz: read_session_voxels(path, xyz, trials, volume, "bench"),
            "voxel-raw (new)": lambda xyz: read_betas_voxels(path, xyz, trials, volume, "bench", layout="voxel-raw"),
            "voxel hyperslab": lambda xyz: read_betas_voxels(path, xyz, trials, volume, "bench", layout="voxel"),
        }
        print(f"{'regions':<10}{'voxels':>8}{'box voxels':>12}{'reader':>18}{'cold s':>9}{'warm s':>9}{'vs box (cold)':>15}")
        for name, xyz in region_sets(volume).items():
            box = int(np.prod(xyz.max(axis=0) - xyz.min(axis=0) + 1))
            reference, reference_cold = None, None
            for label, read in readers.items():
                cold, values = timed(lambda: read(xyz), path, True, args.repeats)
                warm, _ = timed(lambda: read(xyz), path, False, args.repeats)
                if reference is None:
                    reference, reference_cold = values, cold
                same = "" if np.array_equal(values, reference) else "  VALUES DIFFER"
                print(f"{name:<10}{len(xyz):>8}{box:>8} ({box / np.prod(volume):4.0%}){label:>18}{cold:>9.2f}"
                      f"{warm:>9.2f}{reference_cold / cold:>14.1f}x{same}")


if __name__ == "__main__":
    main()
