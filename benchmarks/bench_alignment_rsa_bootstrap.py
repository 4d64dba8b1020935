"""RSA bootstrap: 1,000 iterations × 90 % of N = 1,000 test stimuli, Spearman (or Kendall / Pearson).

Compares ``visreps.alignment.rsa_resample_scores`` (backend "numba": compiled single-pass ranks, the default
on CPU; backend "torch": batched cumulative sums, the GPU path and the fallback without numba) with the
straightforward loop (one ``scipy.stats.spearmanr`` per iteration on the sub-RDMs) for the same seed, each in
its own process; prints seconds, peak memory and the largest difference to the loop's distribution.

  python benchmarks/bench_alignment_rsa_bootstrap.py [--stimuli 1000] [--iterations 1000] [--method spearman]
      [--loop-iterations N]   (run the loop on the first N iterations only and scale its time)
      [--backends numba torch]
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


def make_rdms(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A neural and a model RDM (1 − Pearson) of n stimuli sharing a latent structure."""
    from visreps.alignment import rdm_pearson

    rng = np.random.default_rng(0)
    latent = rng.standard_normal((n, 20))
    neural = latent @ rng.standard_normal((20, 500)) + 3 * rng.standard_normal((n, 500))
    model = np.maximum(latent @ rng.standard_normal((20, 2000)) + 4 * rng.standard_normal((n, 2000)), 0)
    return rdm_pearson(model).numpy(), rdm_pearson(neural).numpy()


def child(args: argparse.Namespace) -> None:
    from visreps.alignment import Resampling, rsa_resample_scores
    from visreps.alignment.reference_loops import rsa_resample_scores_loop

    model, neural = np.load(f"{args.inputs}/model.npy"), np.load(f"{args.inputs}/neural.npy")
    if args.case != "loop":  # compile (or load the cached kernels) outside the timing
        rsa_resample_scores([model[:50, :50]], neural[:50, :50], Resampling(50, 2).counts(), method=args.method,
                            backend=args.case)
    baseline = current_rss_mb()
    started = time.perf_counter()
    resampling = Resampling(args.stimuli, args.iterations, seed=args.seed)
    counts = resampling.counts()
    if args.case != "loop":
        scores = rsa_resample_scores([model], neural, counts, method=args.method, backend=args.case)[:, 0]
        iterations = args.iterations
    else:
        iterations = args.loop_iterations or args.iterations
        scores = rsa_resample_scores_loop([model], neural, counts[:iterations], args.method)[:, 0]
    seconds = time.perf_counter() - started
    np.save(args.save, scores)
    report({"seconds": seconds, "iterations": iterations, "baseline_mb": baseline})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stimuli", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--method", default="spearman", choices=("spearman", "kendall", "pearson"))
    parser.add_argument("--loop-iterations", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", nargs="+", choices=("numba", "torch"), default=["numba", "torch"])
    parser.add_argument("--case", choices=("numba", "torch", "loop"))
    parser.add_argument("--save")
    parser.add_argument("--inputs")
    args = parser.parse_args()
    if args.case:
        child(args)
        return
    common = ["--stimuli", str(args.stimuli), "--iterations", str(args.iterations), "--method", args.method,
              "--seed", str(args.seed)]
    if args.loop_iterations:
        common += ["--loop-iterations", str(args.loop_iterations)]
    with tempfile.TemporaryDirectory() as folder:
        model, neural = make_rdms(args.stimuli)
        np.save(f"{folder}/model.npy", model)
        np.save(f"{folder}/neural.npy", neural)
        common += ["--inputs", folder]
        fast = {backend: run_case(__file__, backend, *common, "--save", f"{folder}/{backend}.npy")
                for backend in args.backends}
        loop = run_case(__file__, "loop", *common, "--save", f"{folder}/loop.npy")
        fast_scores = {backend: np.load(f"{folder}/{backend}.npy") for backend in args.backends}
        loop_scores = np.load(f"{folder}/loop.npy")
    n = loop["iterations"]
    loop_seconds = loop["seconds"] * args.iterations / n
    print(f"RSA bootstrap ({args.method}), {args.stimuli} stimuli, {args.iterations} iterations × 90 %; "
          f"{machine_line()}")
    labels = {"numba": "visreps, numba (" + {"spearman": "single-pass ranks", "kendall": "Fenwick tree",
                                             "pearson": "quadratic forms"}[args.method] + ")",
              "torch": "visreps, torch (batched cumsum ranks)"}
    rows = [[labels[backend], f"{figures['seconds']:.2f}", f"{loop_seconds / figures['seconds']:.1f}×",
             f"{figures['peak_mb']:.0f}", f"{figures['peak_mb'] - figures['baseline_mb']:.0f}",
             f"{np.abs(fast_scores[backend][:n] - loop_scores).max():.1e}"] for backend, figures in fast.items()]
    rows.append(["SciPy loop" + (f" ({n} iterations, time scaled)" if n < args.iterations else ""),
                 f"{loop_seconds:.2f}", "1×", f"{loop['peak_mb']:.0f}", f"{loop['peak_mb'] - loop['baseline_mb']:.0f}",
                 "0"])
    print(table(rows, ["method", "seconds", "speed-up", "peak RSS MB", "peak − baseline MB",
                       f"max |Δ| vs loop ({n} iterations)"]))


if __name__ == "__main__":
    main()
