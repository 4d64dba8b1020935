"""First (preprocess from the published files) vs second (preprocessing cache) load of an NSD-like dataset.

Builds an NSD-layout fixture a bit bigger than the test one (default 4 sessions × 750 trials, a 24×20×16 volume,
about 6,500 voxels in the union of the 8 study regions) in a temporary folder, with VISREPS_HOME pointing
there too, then loads every region of one subject twice with fresh dataset objects and prints both times.
Target: the second load at least 10× faster than the first.

    python benchmarks/bench_dataset_cache.py [--sessions 4] [--shape 24 20 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))

from published_fixtures import build_nsd  # noqa: E402

import visreps.data.published.nsd  # noqa: E402,F401  (imports outside the timed region)


def load_all_regions(root: Path, subject: str = "subj01") -> tuple[float, int]:
    """Seconds to open the dataset and fetch every region of ``subject``; total units returned."""
    from visreps.data import open_dataset

    start = time.perf_counter()
    dataset = open_dataset("nsd", root, subjects=[subject])
    units = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's deliberately constant voxel
        for region in dataset.regions(subject):
            units += dataset.responses(subject, region).n_units
    return time.perf_counter() - start, units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=(24, 20, 16), metavar=("X", "Y", "Z"))
    parser.add_argument("--repeats", type=int, default=3, help="cached loads to time (the best is reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="visreps-bench-") as folder:
        os.environ["VISREPS_HOME"] = str(Path(folder) / "home")
        root = Path(folder) / "nsd"
        start = time.perf_counter()
        build_nsd(root, subjects=("subj01",), n_sessions=args.sessions, shape=tuple(args.shape))
        build_seconds = time.perf_counter() - start
        betas_mb = sum(p.stat().st_size for p in root.rglob("betas_session*.hdf5")) / 2**20
        first, units = load_all_regions(root)
        second = min(load_all_regions(root)[0] for _ in range(args.repeats))
        cache_mb = sum(p.stat().st_size for p in (Path(folder) / "home").rglob("*") if p.is_file()) / 2**20
    print(f"fixture: {args.sessions} sessions x 750 trials, volume {tuple(args.shape)}, "
          f"{betas_mb:.1f} MB of int16 betas (built in {build_seconds:.1f} s)")
    print(f"voxels summed over the 8 regions of subj01 (regions overlap): {units}; cache entry {cache_mb:.1f} MB")
    print(f"{'load':<34}{'seconds':>10}")
    print(f"{'first (preprocess + write cache)':<34}{first:>10.3f}")
    print(f"{'second (read cache)':<34}{second:>10.3f}")
    print(f"speed-up: {first / second:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
