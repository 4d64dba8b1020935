"""Sparse random projection of 1,000 × 69,984 activations to 4,096 dimensions.

``SparseProjection.project`` (on the CPU the compiled numba kernel, 16 stimuli per pass; SciPy threads without
numba) against scikit-learn's ``SparseRandomProjection.transform``, each in its own process on the same float32
activations (ReLU-like, half zeros); the matrix is built before the timing (its build time is printed
separately); each transform is timed twice (first call, then warm). Also times building the 290,400 × 4,096
conv1 matrix.

  python benchmarks/bench_alignment_projection.py [--stimuli 1000] [--features 69984]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_alignment_common import current_rss_mb, machine_line, report, run_case, table  # noqa: E402


def child(args: argparse.Namespace) -> None:
    x = np.load(f"{args.inputs}/x.npy")
    if args.case == "build-conv1":
        from visreps.alignment import sparse_random_projection

        baseline = current_rss_mb()
        started = time.perf_counter()
        projection = sparse_random_projection(290400, 4096, seed=0)
        report({"seconds": time.perf_counter() - started, "build_seconds": 0.0, "baseline_mb": baseline,
                "nonzeros": int(projection.matrix.values().numel())})
        return
    started = time.perf_counter()
    if args.case == "visreps":
        from visreps.alignment import sparse_random_projection

        projection = sparse_random_projection(x.shape[1], 4096, seed=0)
    else:
        from sklearn.random_projection import SparseRandomProjection

        projection = SparseRandomProjection(4096, density="auto", random_state=0).fit(x[:2])
    build = time.perf_counter() - started
    baseline = current_rss_mb()
    times = []
    for _ in range(2):  # first call (loads compiled kernels, converts the matrix), then a warm call
        started = time.perf_counter()
        out = projection.project(x) if args.case == "visreps" else projection.transform(x)
        times.append(time.perf_counter() - started)
        out = np.asarray(out)
    report({"seconds": times[0], "warm_seconds": times[1], "build_seconds": build, "baseline_mb": baseline,
            "shape": list(out.shape), "norm_ratio": float(np.linalg.norm(out) / np.linalg.norm(x))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stimuli", type=int, default=1000)
    parser.add_argument("--features", type=int, default=69984)
    parser.add_argument("--case", choices=("visreps", "sklearn", "build-conv1"))
    parser.add_argument("--inputs")
    args = parser.parse_args()
    if args.case:
        child(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        x = np.maximum(np.random.default_rng(0).standard_normal((args.stimuli, args.features), dtype=np.float32), 0)
        np.save(f"{folder}/x.npy", x)
        del x
        results = {case: run_case(__file__, case, "--inputs", folder) for case in ("visreps", "sklearn")}
        conv1 = run_case(__file__, "build-conv1", "--inputs", folder)
    print(f"Sparse random projection, {args.stimuli} × {args.features} float32 → 4096; {machine_line()}")
    rows = [[case, f"{r['seconds']:.2f}", f"{r['warm_seconds']:.2f}", f"{r['peak_mb']:.0f}",
             f"{r['peak_mb'] - r['baseline_mb']:.0f}", f"{r['build_seconds']:.2f}", f"{r['norm_ratio']:.4f}"]
            for case, r in results.items()]
    print(table(rows, ["case", "transform s (first call)", "transform s (second call)", "peak RSS MB",
                       "peak − baseline MB", "matrix build seconds", "‖XR‖/‖X‖"]))
    ours, theirs = results["visreps"], results["sklearn"]
    print(f"visreps transform {theirs['seconds'] / ours['seconds']:.2f}× (first call), "
          f"{theirs['warm_seconds'] / ours['warm_seconds']:.2f}× (second call) the speed of scikit-learn; "
          f"building the 290,400 × 4,096 conv1 matrix: {conv1['seconds']:.1f} s, "
          f"{conv1['nonzeros']:,} nonzeros, peak − baseline {conv1['peak_mb'] - conv1['baseline_mb']:.0f} MB")


if __name__ == "__main__":
    main()
