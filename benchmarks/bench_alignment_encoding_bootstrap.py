"""Encoding bootstrap: 1,000 iterations × 90 % of 1,000 cached test predictions, 15,000 targets.

``bootstrap_encoding`` (all iterations at once from five weighted moments, float64) against the
per-iteration loop (numpy: subset rows, centre, correlate every target, average), same seed, each in its own
process. The loop takes ~0.5 s per iteration here, so by default it runs the first 100 iterations and its
time is scaled to 1,000 (``--loop-iterations 1000`` runs it all); the values are compared on those.

  python benchmarks/bench_alignment_encoding_bootstrap.py [--targets 15000] [--loop-iterations 100]
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
    from visreps.alignment import Resampling, bootstrap_encoding
    from visreps.alignment.reference_loops import encoding_resample_scores_loop

    predictions, responses = np.load(f"{args.inputs}/p.npy"), np.load(f"{args.inputs}/y.npy")
    baseline = current_rss_mb()
    started = time.perf_counter()
    if args.case == "fast":
        scores = bootstrap_encoding(predictions, responses, n_iterations=args.iterations, seed=0).distribution
        iterations = args.iterations
    else:
        iterations = args.loop_iterations
        indices = Resampling(responses.shape[0], args.iterations, seed=0).indices()[:iterations]
        scores = encoding_resample_scores_loop(predictions, responses, indices)
    seconds = time.perf_counter() - started
    np.save(args.save, scores)
    report({"seconds": seconds, "iterations": iterations, "baseline_mb": baseline})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stimuli", type=int, default=1000)
    parser.add_argument("--targets", type=int, default=15000)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--loop-iterations", type=int, default=100)
    parser.add_argument("--case", choices=("fast", "loop"))
    parser.add_argument("--inputs")
    parser.add_argument("--save")
    args = parser.parse_args()
    if args.case:
        child(args)
        return
    common = ["--iterations", str(args.iterations), "--loop-iterations", str(args.loop_iterations)]
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        responses = rng.standard_normal((args.stimuli, args.targets), dtype=np.float32)
        predictions = 0.3 * responses + rng.standard_normal((args.stimuli, args.targets), dtype=np.float32)
        np.save(f"{folder}/y.npy", responses)
        np.save(f"{folder}/p.npy", predictions)
        fast = run_case(__file__, "fast", *common, "--inputs", folder, "--save", f"{folder}/fast.npy")
        loop = run_case(__file__, "loop", *common, "--inputs", folder, "--save", f"{folder}/loop.npy")
        fast_scores, loop_scores = np.load(f"{folder}/fast.npy"), np.load(f"{folder}/loop.npy")
    n = loop["iterations"]
    loop_seconds = loop["seconds"] * args.iterations / n
    print(f"Encoding bootstrap, {args.stimuli} stimuli × {args.targets} targets, {args.iterations} iterations × 90 %;"
          f" {machine_line()}")
    rows = [
        ["visreps (batched moments)", f"{fast['seconds']:.2f}", f"{fast['peak_mb']:.0f}",
         f"{fast['peak_mb'] - fast['baseline_mb']:.0f}"],
        ["numpy loop" + (f" ({n} iterations, time scaled)" if n < args.iterations else ""), f"{loop_seconds:.1f}",
         f"{loop['peak_mb']:.0f}", f"{loop['peak_mb'] - loop['baseline_mb']:.0f}"],
    ]
    print(table(rows, ["method", "seconds", "peak RSS MB", "peak − baseline MB"]))
    print(f"speed-up {loop_seconds / fast['seconds']:.1f}×; "
          f"max |Δ| over {n} iterations = {np.abs(fast_scores[:n] - loop_scores).max():.2e}")


if __name__ == "__main__":
    main()
