"""Streaming PCA + median-split labelling on synthetic features: memory, agreement with numpy, throughput.

For each N (default 50k, 100k, 200k rows × 1,024 dims) a fresh subprocess runs the visreps streaming path
(two passes over generated batches: float64 covariance, eigh, projections, medians, labels up to K = 1024)
and reports its peak resident memory. A reference subprocess builds the full N×D matrix and runs
``numpy.linalg.eigh(np.cov(X))``; the components are compared by their largest principal (subspace) angle and
the labels by agreement. Rows are generated block by block from seeded generators, so both processes see the
same data without ever sharing it.

    python benchmarks/bench_streaming_pca.py                # 50k, 100k, 200k × 1024
    python benchmarks/bench_streaming_pca.py --sizes 20000 --dim 256 --reference-at 20000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK = 8192
N_PCS = 10


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def basis(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded orthogonal basis (dim, dim) and per-axis scales (decaying for 32 axes, then flat noise)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    scales = np.full(dim, 0.05)
    scales[:32] = 0.85 ** np.arange(32)
    return q, scales


def block(index: int, n_rows: int, q: np.ndarray, scales: np.ndarray, seed: int) -> np.ndarray:
    """Rows [index·BLOCK, ...) of the synthetic feature matrix: ReLU-like (non-negative mean) float32."""
    start = index * BLOCK
    count = min(BLOCK, n_rows - start)
    rng = np.random.default_rng([seed, index])
    z = rng.standard_normal((count, q.shape[0])) * scales
    return (z @ q.T + 0.3).astype(np.float32)


def run_streaming(n_rows: int, dim: int, seed: int, out: Path, cache: bool) -> dict:
    import torch

    from visreps.labels import coarse_labels, median_thresholds, streaming_pca

    q, scales = basis(dim, seed)
    warm = np.random.default_rng(0).standard_normal((64, 16))
    streaming_pca(lambda rows: [(rows, torch.from_numpy(warm[rows]))], 64, np.ones(64, dtype=bool), 2)  # lazy inits
    baseline = peak_rss_mb()
    n_blocks = (n_rows + BLOCK - 1) // BLOCK

    def make(rows: np.ndarray):
        for b in range(n_blocks):
            yield np.arange(b * BLOCK, min((b + 1) * BLOCK, n_rows)), torch.from_numpy(block(b, n_rows, q, scales, seed))

    started = time.perf_counter()
    for b in range(n_blocks):
        block(b, n_rows, q, scales, seed)
    generation = time.perf_counter() - started
    fit = np.ones(n_rows, dtype=bool)
    fit[np.random.default_rng(seed).permutation(n_rows)[: n_rows // 5]] = False  # 80/20 split: medians on fit rows
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result = streaming_pca(make, n_rows, fit, N_PCS, device=device,
                               cache_file=Path(scratch) / "f16" if cache else None)
        thresholds = median_thresholds(result.projections, fit)
        labels = coarse_labels(result.projections, thresholds, [8, 1024])
    seconds = time.perf_counter() - started
    np.savez(out, components=result.pca.components, eigenvalues=result.pca.eigenvalues[:N_PCS],
             k8=labels[8], k1024=labels[1024])
    passes = 1 if cache else 2
    return {"n": n_rows, "device": device, "baseline_mb": baseline, "peak_mb": peak_rss_mb(), "seconds": seconds,
            "generation_seconds_per_pass": generation, "passes_generating": passes,
            "rows_per_second": n_rows / seconds,
            "rows_per_second_without_generation": n_rows / max(seconds - passes * generation, 1e-9)}


def run_reference(n_rows: int, dim: int, seed: int, out: Path) -> dict:
    from visreps.labels import fix_signs

    q, scales = basis(dim, seed)
    baseline = peak_rss_mb()
    started = time.perf_counter()
    x = np.concatenate([block(b, n_rows, q, scales, seed) for b in range((n_rows + BLOCK - 1) // BLOCK)])
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fit = np.ones(n_rows, dtype=bool)
    fit[np.random.default_rng(seed).permutation(n_rows)[: n_rows // 5]] = False
    values, vectors = np.linalg.eigh(np.cov(x[fit], rowvar=False))
    order = np.argsort(values)[::-1][:N_PCS]
    components = fix_signs(vectors[:, order].T)
    projections = (x - x[fit].mean(axis=0)) @ components.T
    bits = (projections > np.median(projections[fit], axis=0)).astype(np.int64)
    k1024 = bits @ (2 ** np.arange(N_PCS - 1, -1, -1))
    seconds = time.perf_counter() - started
    np.savez(out, components=components, eigenvalues=values[order], k8=k1024 >> 7, k1024=k1024)
    return {"n": n_rows, "baseline_mb": baseline, "peak_mb": peak_rss_mb(), "seconds": seconds}


def subprocess_run(mode: str, n_rows: int, args, out: Path, cache: bool = False) -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--n", str(n_rows), "--dim", str(args.dim),
               "--seed", str(args.seed), "--out", str(out)] + (["--cache"] if cache else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 100_000, 200_000])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-at", type=int, default=None, help="N for the numpy reference (default: largest)")
    parser.add_argument("--worker", choices=["streaming", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "streaming":
        print(json.dumps(run_streaming(args.n, args.dim, args.seed, args.out, args.cache)))
        return
    if args.worker == "reference":
        print(json.dumps(run_reference(args.n, args.dim, args.seed, args.out)))
        return

    from scipy.linalg import subspace_angles

    reference_n = args.reference_at or max(args.sizes)
    print(f"streaming PCA + labels (n_pcs={N_PCS}, K up to 1024), D={args.dim}, one subprocess per row")
    print(f"{'run':<28}{'N':>9}{'peak MiB':>10}{'after imports':>15}{'seconds':>9}{'rows/s':>10}{'rows/s excl. gen':>18}")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        rows = []
        for n in args.sizes:
            rows.append(("streaming (2 passes)", subprocess_run("streaming", n, args, folder / f"s{n}.npz")))
        rows.append(("streaming + float16 cache", subprocess_run("streaming", reference_n, args,
                                                                 folder / "cache.npz", cache=True)))
        rows.append(("numpy eigh on full matrix", subprocess_run("reference", reference_n, args, folder / "ref.npz")))
        for name, row in rows:
            fast = row.get("rows_per_second_without_generation")
            print(f"{name:<28}{row['n']:>9,}{row['peak_mb']:>10.0f}{row['peak_mb'] - row['baseline_mb']:>15.0f}"
                  f"{row['seconds']:>9.1f}{row['n'] / row['seconds']:>10,.0f}{(f'{fast:,.0f}' if fast else '-'):>18}")
        reference = np.load(folder / "ref.npz")
        for label, path in (("streaming", folder / f"s{reference_n}.npz"), ("float16 cache", folder / "cache.npz")):
            if not path.exists():
                continue
            ours = np.load(path)
            angle = float(np.max(subspace_angles(ours["components"].T, reference["components"].T)))
            eig = float(np.max(np.abs(ours["eigenvalues"] / reference["eigenvalues"] - 1)))
            print(f"{label} vs numpy at N={reference_n:,}: max subspace angle {angle:.2e} rad, max eigenvalue "
                  f"rel. diff {eig:.1e}, labels equal K=8 {np.mean(ours['k8'] == reference['k8']):.6f}, "
                  f"K=1024 {np.mean(ours['k1024'] == reference['k1024']):.6f}")
        print(f"device: {rows[0][1]['device']}; CPU threads: {os.cpu_count()}")


if __name__ == "__main__":
    main()
