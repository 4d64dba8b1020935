"""Ridge encoding: 8,000 × 4,096 train features, 1,000 test stimuli, 2,000 (or 15,000) targets.

Cases, each in its own process on the same data (seeded): ``visreps`` (``fit_ridge_cv`` + predict, torch
on CPU), ``himalaya-numpy`` and ``himalaya-torch`` (``himalaya.ridge.RidgeCV`` with the same 20 alphas and
cv=5 on data z-scored with training statistics, backends "numpy" and "torch"). Prints seconds, peak memory
and the test mean Pearson r of each, and the largest per-target r difference to visreps.

  python benchmarks/bench_alignment_encoding.py [--targets 2000] [--cases visreps himalaya-numpy himalaya-torch]
      [--train 8000] [--features 4096] [--test 1000] [--reference-targets N1 N2]

With ``--reference-targets N1 N2`` (N1 < N2 < targets) himalaya is run on the first N1 and the first N2 targets
only (it is slow at 15,000 targets: all 20 alphas' coefficients at once) and its time and peak memory are
extrapolated linearly in the number of targets (a + b·T through the two measurements); its per-target r are
compared with visreps on the first N2 targets. The table marks extrapolated figures.
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

CASES = ("visreps", "himalaya-numpy", "himalaya-torch")


def make_data(folder: str, n_train: int, n_test: int, n_features: int, n_targets: int) -> None:
    """Low-rank-plus-noise features; targets driven by a random subset of feature directions plus noise."""
    rng = np.random.default_rng(0)
    n = n_train + n_test
    x = (rng.standard_normal((n, 64), dtype=np.float32) @ rng.standard_normal((64, n_features), dtype=np.float32)
         * 0.3 + rng.standard_normal((n, n_features), dtype=np.float32))
    weights = rng.standard_normal((n_features, n_targets), dtype=np.float32) / np.sqrt(n_features)
    signal = rng.uniform(0.0, 1.0, n_targets).astype(np.float32)
    y = x @ (weights * signal) + rng.standard_normal((n, n_targets), dtype=np.float32)
    for name, array in (("x_train", x[:n_train]), ("x_test", x[n_train:]), ("y_train", y[:n_train]),
                        ("y_test", y[n_train:])):
        np.save(f"{folder}/{name}.npy", np.ascontiguousarray(array))


def zscore(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, scale = train.mean(0), train.std(0) + 1e-8
    return (train - mean) / scale, (other - mean) / scale


def child(args: argparse.Namespace) -> None:
    from visreps.alignment import fit_ridge_cv, pearson_columns
    from visreps.alignment.encoding import DEFAULT_ALPHAS

    data = {name: np.load(f"{args.inputs}/{name}.npy") for name in ("x_train", "x_test", "y_train", "y_test")}
    if args.target_limit:
        for name in ("y_train", "y_test"):
            data[name] = np.ascontiguousarray(data[name][:, :args.target_limit])
    baseline = current_rss_mb()
    started = time.perf_counter()
    if args.case == "visreps":
        predictions = fit_ridge_cv(data["x_train"], data["y_train"]).predict(data["x_test"]).numpy()
    else:
        from himalaya.backend import set_backend
        from himalaya.ridge import RidgeCV

        backend = set_backend(args.case.split("-")[1])
        x_train, x_test = zscore(data["x_train"], data["x_test"])
        y_train = (data["y_train"] - data["y_train"].mean(0)) / (data["y_train"].std(0) + 1e-8)
        model = RidgeCV(alphas=DEFAULT_ALPHAS, cv=5, solver_params={"warn": False}).fit(x_train, y_train)
        predictions = backend.to_numpy(model.predict(x_test))
    seconds = time.perf_counter() - started
    r = pearson_columns(predictions, data["y_test"]).numpy()
    np.save(args.save, r)
    report({"seconds": seconds, "mean_r": float(r.mean()), "baseline_mb": baseline})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--reference-targets", type=int, nargs=2, metavar=("N1", "N2"))
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("--target-limit", type=int)
    parser.add_argument("--inputs")
    parser.add_argument("--save")
    args = parser.parse_args()
    if args.case:
        child(args)
        return
    results, per_target, extrapolated = {}, {}, False
    with tempfile.TemporaryDirectory() as folder:
        make_data(folder, args.train, args.test, args.features, args.targets)
        for case in args.cases:
            if case == "visreps" or not args.reference_targets:
                results[case] = run_case(__file__, case, "--inputs", folder, "--save", f"{folder}/{case}.npy")
            else:
                results[case] = extrapolate(case, folder, args.reference_targets, args.targets)
                extrapolated = True
            per_target[case] = np.load(f"{folder}/{case}.npy")
            print(f"  {case}: {results[case]['seconds']:.1f} s", flush=True)
    print(f"Encoding, {args.train} × {args.features} train, {args.test} test, {args.targets} targets; {machine_line()}")
    if extrapolated:
        n1, n2 = args.reference_targets
        print(f"himalaya measured at {n1:,} and {n2:,} targets, time and memory extrapolated linearly to "
              f"{args.targets:,} (marked *); r compared on the first {n2:,} targets")
    rows = []
    for case, figures in results.items():
        delta = ""
        if "visreps" in per_target:
            shared = min(per_target[case].size, per_target["visreps"].size)
            delta = f"{np.abs(per_target[case][:shared] - per_target['visreps'][:shared]).max():.1e}"
        star = "*" if figures.get("extrapolated") else ""
        rows.append([case, f"{figures['seconds']:.1f}{star}", f"{figures['peak_mb']:.0f}{star}",
                     f"{figures['peak_mb'] - figures['baseline_mb']:.0f}{star}",
                     f"{figures['mean_r']:.6f}" + (f" (first {per_target[case].size:,})" if star else ""), delta])
    print(table(rows, ["case", "seconds", "peak RSS MB", "peak − baseline MB", "test mean r",
                       "max |Δr| per target vs visreps"]))
    if "visreps" in results:
        for case in results:
            if case != "visreps":
                ours, theirs = results["visreps"], results[case]
                shared = per_target[case].size
                mean_delta = abs(per_target[case].mean() - per_target["visreps"][:shared].mean())
                print(f"visreps vs {case}: {theirs['seconds'] / ours['seconds']:.1f}× faster, "
                      f"peak memory above baseline {ours['peak_mb'] - ours['baseline_mb']:.0f}"
                      f" vs {theirs['peak_mb'] - theirs['baseline_mb']:.0f} MB, "
                      f"|Δ mean r| = {mean_delta:.1e} (over {shared:,} targets)")


def extrapolate(case: str, folder: str, reference_targets: list[int], targets: int) -> dict:
    """Run ``case`` on the first N1 and N2 targets; extrapolate seconds and memory linearly to ``targets``."""
    (n1, n2), measured = reference_targets, []
    for n in (n1, n2):
        measured.append(run_case(__file__, case, "--inputs", folder, "--save", f"{folder}/{case}.npy",
                                 "--target-limit", str(n)))
        print(f"  {case} at {n:,} targets: {measured[-1]['seconds']:.1f} s, {measured[-1]['peak_mb']:.0f} MB peak",
              flush=True)
    out = dict(measured[1], extrapolated=True, measured=measured)
    for key in ("seconds", "peak_mb"):
        slope = (measured[1][key] - measured[0][key]) / (n2 - n1)
        out[key] = measured[1][key] + slope * (targets - n2)
    return out


if __name__ == "__main__":
    main()
