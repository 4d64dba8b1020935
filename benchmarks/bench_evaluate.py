"""Full evaluation of one CustomCNN on one NSD-layout synthetic subject: visreps vs the straightforward path.

One subject, 3 regions (V1 / V4 / ventral, 2,500 / 5,000 / 7,600 voxels), train and test stimuli, RSA and
encoding over the 14 extraction points, bootstrap CIs. Cases, each in its own fresh process on the same inputs:

- ``visreps``: the evaluate stage's pieces called directly (no MLflow): ``extract_features`` of every stimulus
  into the on-disk cache (projected to 4,096 per point), then per region and analysis ``score_pair``, which
  re-extracts the selected point's exact test activations for RSA (timed as extraction).
- ``autocast``: ``visreps`` with the activations extracted under ``--autocast`` (bf16 by default; the evaluate
  stage's ``autocast=`` option), compared with the fp32 ``visreps`` case: the score change autocast causes.
- ``reference``: the straightforward implementation: every point's activations of every stimulus in memory at
  full size (forward hooks), projected in memory with the same seeded matrices; RSA with ``np.corrcoef`` RDMs,
  ``scipy.stats.spearmanr`` and the SciPy bootstrap loop (one ``spearmanr`` per resample); encoding with
  himalaya ``RidgeCV`` (alphas ``np.logspace(-10, 10, 20)``, cv=5, no intercept; ``--ridge kernel``: ``KernelRidgeCV``
  with a linear kernel) on data z-scored with fit-split statistics as visreps does (docs/evaluation.md,
  visreps/alignment/encoding.py), and a numpy bootstrap loop on the test predictions.

Responses are a seeded random linear map of one point's spatially pooled activations (V1: conv2_post, V4:
conv4_post, ventral: fc1_post) plus noise, computed once in the parent; images are smooth colour noise generated
from (seed, stimulus id) at NSD's 425 × 425. Prints wall time of extraction and scoring separately, peak
memory (ru_maxrss, plus the sampled peak of non-file-backed memory RssAnon: the cache's memory-mapped pages are
file-backed), and the largest difference of every score (selection score per point, test score, CI bounds).

  python benchmarks/bench_evaluate.py [--n-train 1000] [--n-test 1000] [--voxels 2500 5000 7600]
      [--image-size 112] [--bootstrap 1000] [--batch-size 64] [--ridge ridge|kernel] [--seed 0]
      [--cases visreps reference autocast] [--autocast bf16|fp16]

NSD itself is 9,000 train + 1,000 test stimuli at 224 px: the straightforward path would hold ~53 GB of
activations, so the defaults scale stimuli and image size down (the printout says how the figures extrapolate).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_alignment_common import current_rss_mb, machine_line, peak_rss_mb, report, run_case, table  # noqa: E402
from bench_evaluate_reference import bootstrap_indices, reference_encoding, reference_rsa  # noqa: E402

REGIONS = (("V1", "conv2_post"), ("V4", "conv4_post"), ("ventral", "fc1_post"))
ANALYSES = ("rsa", "encoding")
CASES = ("visreps", "reference", "autocast")
PROJECTION_DIM = 4096
TOLERANCE = 1e-6


class NoiseImages:
    """``load_image`` of the synthetic stimuli: smooth colour noise, 425 × 425, a pure function of (seed, id)."""

    def __init__(self, seed: int, size: int = 425) -> None:
        self.seed, self.size = seed, size

    def __call__(self, image_id: str):
        from PIL import Image

        rng = np.random.default_rng([self.seed, int(image_id.removeprefix("nsd"))])
        coarse = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).resize((self.size,) * 2,
                                                                                          Image.BICUBIC)
        fine = rng.standard_normal((self.size, self.size, 3), dtype=np.float32) * 24
        return Image.fromarray(np.clip(np.asarray(coarse, dtype=np.float32) + fine, 0, 255).astype(np.uint8))


class PhasePeaks(threading.Thread):
    """Peak VmRSS and RssAnon (resident memory that is not file-backed) of this process per phase, sampled every
    10 ms; ``mark(phase)`` closes the current phase. The feature cache's memory-mapped pages are file-backed:
    they count in VmRSS (and ``ru_maxrss``) but not in RssAnon."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.rss = self.anon = 0.0
        self.phases: dict[str, dict[str, float]] = {}

    @staticmethod
    def now_mb() -> tuple[float, float]:
        with open("/proc/self/status") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["VmRSS"].split()[0]) / 1e3, int(fields["RssAnon"].split()[0]) / 1e3

    def mark(self, phase: str) -> None:
        rss, anon = self.now_mb()
        self.phases[phase] = {"rss_mb": max(self.rss, rss), "anon_mb": max(self.anon, anon)}
        self.rss = self.anon = 0.0

    def run(self) -> None:
        while True:
            rss, anon = self.now_mb()
            self.rss, self.anon = max(self.rss, rss), max(self.anon, anon)
            time.sleep(0.01)


def stimulus_ids(n_train: int, n_test: int) -> tuple[list[str], list[str]]:
    return [f"nsd{i:05d}" for i in range(n_test, n_test + n_train)], [f"nsd{i:05d}" for i in range(n_test)]


def load_model(folder: Path):
    import torch

    from visreps.models import create_model

    model = create_model("custom_cnn", 1000)
    model.load_state_dict(torch.load(folder / "model.pt"))
    return model.eval()


def point_widths(model, image_size: int) -> dict[str, int]:
    """Activation width of every extraction point for one image of ``image_size``."""
    import torch

    from visreps.activations import ActivationReader
    from visreps.models import extraction_points

    with ActivationReader(model, extraction_points(model)) as reader:
        outputs = reader(torch.zeros(1, 3, image_size, image_size))
    return {point: int(value.shape[1]) for point, value in outputs.items()}


def make_inputs(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Weights, responses and settings in ``folder``; returns the settings (with the point widths)."""
    import torch
    import torch.nn.functional as functional

    from visreps.activations import ActivationReader, StimulusSet
    from visreps.fingerprints import state_dict_fingerprint
    from visreps.models import create_model
    from visreps.models.transforms import eval_transform

    torch.manual_seed(args.seed)
    model = create_model("custom_cnn", 1000).eval()
    torch.save(model.state_dict(), folder / "model.pt")
    train_ids, test_ids = stimulus_ids(args.n_train, args.n_test)
    ids = train_ids + test_ids
    stimuli = StimulusSet(tuple(ids), tuple((i,) for i in ids), NoiseImages(args.seed), f"bench-{args.seed}")
    sources = sorted({point for _, point in REGIONS})
    pooled: dict[str, list] = {point: [] for point in sources}
    with ActivationReader(model, sources) as reader:
        for images, _ in stimuli.batches(eval_transform(args.image_size), batch_size=args.batch_size):
            for point, value in reader(images).items():
                layer = getattr(model, point.split("_")[0])
                if hasattr(layer, "conv"):  # feature map: 3 × 3 spatial average per channel
                    channels = layer.conv.out_channels
                    side = math.isqrt(value.shape[1] // channels)
                    value = functional.adaptive_avg_pool2d(value.view(-1, channels, side, side), 3).flatten(1)
                pooled[point].append(value.numpy())
    rng = np.random.default_rng(args.seed)
    responses = {}
    for (region, point), voxels in zip(REGIONS, args.voxels):
        z = np.concatenate(pooled[point]).astype(np.float64)
        z = (z - z.mean(0)) / (z.std(0) + 1e-8)
        signal = z @ rng.standard_normal((z.shape[1], voxels)) / math.sqrt(z.shape[1])
        data = (rng.uniform(0.3, 1.0, voxels) * signal + rng.standard_normal(signal.shape)).astype(np.float32)
        responses[f"{region}_train"], responses[f"{region}_test"] = data[:args.n_train], data[args.n_train:]
    np.savez(folder / "responses.npz", **responses)
    settings = {"n_train": args.n_train, "n_test": args.n_test, "voxels": list(args.voxels), "seed": args.seed,
                "image_size": args.image_size, "bootstrap": args.bootstrap, "batch_size": args.batch_size,
                "ridge": args.ridge, "weights_fingerprint": state_dict_fingerprint(model.state_dict()),
                "widths": point_widths(model, args.image_size), "widths_224": point_widths(model, 224)}
    (folder / "settings.json").write_text(json.dumps(settings))
    return settings


def child(args: argparse.Namespace) -> None:
    folder = Path(args.inputs)
    settings = json.loads((folder / "settings.json").read_text())
    data = dict(np.load(folder / "responses.npz"))
    sampler = PhasePeaks()
    sampler.start()
    if args.case == "reference":
        figures = run_reference(folder, settings, data, sampler)
    else:
        figures = run_visreps(folder, settings, data, sampler, args.autocast if args.case == "autocast" else "none")
    sampler.mark("scoring")
    report({**figures, "phases": sampler.phases})


def run_visreps(folder: Path, settings: dict[str, Any], data: dict[str, np.ndarray], sampler: PhasePeaks,
                autocast: str = "none") -> dict:
    from visreps.activations import StimulusSet, extract_features
    from visreps.alignment import bootstrap_rsa
    from visreps.alignment.projection import sparse_random_projection
    from visreps.data.base import Responses
    from visreps.models import extraction_points
    from visreps.models.transforms import eval_transform
    from visreps.stages.evaluate_config import EvaluateConfig
    from visreps.stages.evaluate_pair import score_pair

    model, seed, batch = load_model(folder), settings["seed"], settings["batch_size"]
    points = extraction_points(model)
    train_ids, test_ids = stimulus_ids(settings["n_train"], settings["n_test"])
    ids = train_ids + test_ids
    stimuli = StimulusSet(tuple(ids), tuple((i,) for i in ids), NoiseImages(seed), f"bench-{seed}")
    transform, cache = eval_transform(settings["image_size"]), folder / "cache"
    rng = np.random.default_rng(1)  # load the compiled numba kernels outside the timing, as a warm process would
    bootstrap_rsa(np.abs(rng.standard_normal((20, 20))), np.abs(rng.standard_normal((20, 20))), n_iterations=2)
    sparse_random_projection(5000, 64, seed=0).project(np.ones((2, 5000), dtype=np.float32))
    baseline = current_rss_mb()
    started = time.perf_counter()
    features = extract_features(model, stimuli, transform, points, cache_root=cache,
                                weights_fingerprint=settings["weights_fingerprint"], projection_dim=PROJECTION_DIM,
                                projection_seed=seed, autocast=autocast, batch_size=batch, device="cpu")
    extraction = time.perf_counter() - started
    extraction_peak = peak_rss_mb()
    sampler.mark("extraction")
    exact_seconds = [0.0]

    def exact(point: str, ids_: list[str]):
        started_exact = time.perf_counter()
        out = extract_features(model, stimuli.subset(ids_), transform, [point], cache_root=cache,
                               weights_fingerprint=settings["weights_fingerprint"], projection_dim=None,
                               projection_seed=seed, autocast=autocast, batch_size=batch, device="cpu")[point]
        exact_seconds[0] += time.perf_counter() - started_exact
        return out

    config = EvaluateConfig(n_bootstrap=settings["bootstrap"], seed=seed, batch_size=batch, progress=False)
    results, scoring = {}, {analysis: 0.0 for analysis in ANALYSES}
    for region, _ in REGIONS:
        responses = Responses("subj01", region, np.array(train_ids), np.array(test_ids), data[f"{region}_train"],
                              data[f"{region}_test"])
        for analysis in ANALYSES:
            before_exact, started = exact_seconds[0], time.perf_counter()
            pair = score_pair(config, analysis, responses, features, points, exact)
            scoring[analysis] += time.perf_counter() - started - (exact_seconds[0] - before_exact)
            boot = pair.result.bootstrap
            results[f"{region}/{analysis}"] = {"selection": dict(pair.selection.scores),
                                               "selected": pair.selection.best_layer, "score": pair.result.score,
                                               "ci_low": boot.ci_low, "ci_high": boot.ci_high}
    return {"extraction_s": extraction + exact_seconds[0], "exact_s": exact_seconds[0], "scoring_s": scoring,
            "extraction_peak_mb": extraction_peak, "baseline_mb": baseline, "results": results}


def run_reference(folder: Path, settings: dict[str, Any], data: dict[str, np.ndarray], sampler: PhasePeaks) -> dict:
    import scipy.sparse
    import torch

    from visreps.alignment.selection import projection_for  # the definition of the seeded matrices
    from visreps.models.transforms import eval_transform

    model, seed = load_model(folder), settings["seed"]
    spec = model.extraction_spec()
    n_train, n_test = settings["n_train"], settings["n_test"]
    train_ids, test_ids = stimulus_ids(n_train, n_test)
    ids, load, transform = train_ids + test_ids, NoiseImages(seed), eval_transform(settings["image_size"])
    baseline = current_rss_mb()
    started = time.perf_counter()
    full: dict[str, np.ndarray] = {}
    rows = [0, 0]
    modules = dict(model.named_modules())

    def hook(name: str):
        def store(module, inputs, output):
            value = output.detach().flatten(1).numpy()
            if name not in full:
                full[name] = np.empty((len(ids), value.shape[1]), dtype=np.float32)
            full[name][rows[0]:rows[1]] = value
        return store

    handles = [modules[point.module].register_forward_hook(hook(point.name)) for point in spec]
    with torch.inference_mode():
        for start in range(0, len(ids), settings["batch_size"]):
            batch = ids[start:start + settings["batch_size"]]
            rows[:] = start, start + len(batch)
            model(torch.stack([transform(load(i).convert("RGB")) for i in batch]))
    for handle in handles:
        handle.remove()
    projected = {}
    for name, x in full.items():
        projection = projection_for(x.shape[1], PROJECTION_DIM, seed)
        if projection.is_identity:
            projected[name] = x
            continue
        m = projection.matrix
        r = scipy.sparse.csr_matrix((m.values().numpy(), m.col_indices().numpy(), m.crow_indices().numpy()),
                                    shape=tuple(m.shape))
        projected[name] = np.empty((x.shape[0], r.shape[0]), dtype=np.float32)
        for block in range(0, x.shape[0], 256):
            projected[name][block:block + 256] = (r @ x[block:block + 256].T).T
    extraction = time.perf_counter() - started
    extraction_peak = peak_rss_mb()
    sampler.mark("extraction")
    names = [point.name for point in spec]
    results, scoring = {}, {analysis: 0.0 for analysis in ANALYSES}
    indices = bootstrap_indices(n_test, settings["bootstrap"], seed)
    for region, _ in REGIONS:
        y_train, y_test = data[f"{region}_train"], data[f"{region}_test"]
        started = time.perf_counter()
        results[f"{region}/rsa"] = reference_rsa(projected, full, names, y_train, y_test, n_train, indices, seed)
        scoring["rsa"] += time.perf_counter() - started
        started = time.perf_counter()
        results[f"{region}/encoding"] = reference_encoding(projected, names, y_train, y_test, n_train, indices,
                                                           seed, settings["ridge"])
        scoring["encoding"] += time.perf_counter() - started
    return {"extraction_s": extraction, "scoring_s": scoring, "extraction_peak_mb": extraction_peak,
            "baseline_mb": baseline, "results": results}


def agreement(ours: dict, theirs: dict) -> tuple[list[list[str]], float]:
    """Rows of the agreement table and the largest difference of any score."""
    rows, worst = [], 0.0
    for key, mine in ours.items():
        other = theirs[key]
        differences = {p: abs(mine["selection"][p] - other["selection"][p]) for p in mine["selection"]}
        worst_point = max(differences, key=differences.get)
        deltas = [differences[worst_point]] + [abs(mine[name] - other[name]) for name in ("score", "ci_low", "ci_high")]
        worst = max(worst, *deltas)
        selected = mine["selected"] if mine["selected"] == other["selected"] else \
            f"**{mine['selected']} vs {other['selected']}**"
        rows.append([key, selected, f"{mine['score']:.6f}", f"[{mine['ci_low']:.4f}, {mine['ci_high']:.4f}]",
                     f"{deltas[0]:.1e} ({worst_point})", *(f"{delta:.1e}" for delta in deltas[1:]),
                     "ok" if max(deltas) <= TOLERANCE and mine["selected"] == other["selected"] else "**> 1e-6**"])
    return rows, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--voxels", type=int, nargs=3, default=[2500, 5000, 7600])
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ridge", choices=("ridge", "kernel"), default="ridge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=["visreps", "reference"])
    parser.add_argument("--autocast", choices=("bf16", "fp16"), default="bf16", help="the autocast case's dtype")
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("--inputs")
    args = parser.parse_args()
    if args.case:
        child(args)
        return
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        settings = make_inputs(Path(folder), args)
        print(f"  inputs (weights, {args.n_train + args.n_test:,} stimuli through the network for the responses): "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        for case in args.cases:
            results[case] = run_case(__file__, case, "--inputs", folder, "--autocast", args.autocast,
                                     timeout=args.timeout)
            figures = results[case]
            print(f"  {case}: extraction {figures['extraction_s']:.0f} s, scoring "
                  f"{sum(figures['scoring_s'].values()):.0f} s, peak {figures['peak_mb']:.0f} MB", flush=True)
    print_report(args, settings, results)


def print_report(args: argparse.Namespace, settings: dict[str, Any], results: dict[str, dict]) -> None:
    width, width_224 = sum(settings["widths"].values()), sum(settings["widths_224"].values())
    n, points, gb = args.n_train + args.n_test, len(settings["widths"]), 4 / 1e9
    print(f"\nFull evaluation, CustomCNN (K=1000, {points} points), 1 subject × 3 regions "
          f"({' / '.join(f'{v:,}' for v in args.voxels)} voxels), RSA + encoding; {machine_line()}")
    print(f"Scaled from NSD: {args.n_train:,} of 9,000 train and {args.n_test:,} of 1,000 test stimuli, "
          f"{args.image_size} px of 224 (activations per stimulus {width:,} of {width_224:,} values; conv1 "
          f"{settings['widths']['conv1_pre']:,} of {settings['widths_224']['conv1_pre']:,}), {args.bootstrap:,} "
          f"of 1,000 bootstraps; reference ridge: himalaya {'KernelRidgeCV' if args.ridge == 'kernel' else 'RidgeCV'}")
    labels = {"visreps": "visreps (cache on disk)", "reference": "straightforward (all points in memory)",
              "autocast": f"visreps, {args.autocast} autocast extraction"}
    rows = []
    for case, f in results.items():
        s, phases = f["scoring_s"], f["phases"]
        rows.append([labels[case], f"{f['extraction_s']:.1f}" + (f" (exact test {f['exact_s']:.1f})"
                                                                  if "exact_s" in f else ""),
                     f"{s['rsa']:.1f}", f"{s['encoding']:.1f}", f"{s['rsa'] + s['encoding']:.1f}",
                     f"{f['peak_mb']:,.0f}", f"{f['peak_mb'] - f['baseline_mb']:,.0f}",
                     *(" / ".join(f"{phases[p][key]:,.0f}" for p in ("extraction", "scoring"))
                       for key in ("rss_mb", "anon_mb"))])
    print(table(rows, ["path", "extraction s", "RSA scoring s", "encoding scoring s", "scoring s", "peak RSS MB",
                       "peak − baseline MB", "RSS MB extraction / scoring", "RssAnon MB extraction / scoring"]))
    if "visreps" in results and "autocast" in results:
        print_autocast_change(args, results["visreps"], results["autocast"])
    if "visreps" not in results or "reference" not in results:
        return
    ours, theirs = results["visreps"], results["reference"]
    rows, worst = agreement(ours["results"], theirs["results"])
    print(table(rows, ["region/analysis", "selected point", "score (visreps)", "95 % CI (visreps)",
                       "max \\|Δ\\| selection (at point)", "\\|Δ\\| score", "\\|Δ\\| CI low", "\\|Δ\\| CI high",
                       "≤ 1e-6"]))
    speed = {a: theirs["scoring_s"][a] / ours["scoring_s"][a] for a in ANALYSES}
    total = sum(theirs["scoring_s"].values()) / sum(ours["scoring_s"].values())
    loops = {a: sum(r["bootstrap_s"] for k, r in theirs["results"].items() if k.endswith(a)) for a in ANALYSES}
    print(f"Scoring: {total:.1f}× faster (RSA {speed['rsa']:.1f}×, encoding {speed['encoding']:.1f}×); target ≥ 10×: "
          + ("met" if total >= 10 else f"MISSED by {10 / total:.1f}×") + f". The reference's bootstrap loops took "
          f"{loops['rsa']:.0f} s (RSA; grows as test stimuli² × bootstraps) and {loops['encoding']:.0f} s (encoding); "
          "the rest is selection (per region 14 RDMs + Spearman, or 14 ridge fits) and the test fit")
    print(f"Extraction: the reference took {theirs['extraction_s'] / ours['extraction_s']:.2f}× visreps' time "
          "(visreps' includes re-extracting the selected points' exact test activations for RSA)")
    memory = ours["peak_mb"] / theirs["peak_mb"]
    above = (ours["peak_mb"] - ours["baseline_mb"]) / (theirs["peak_mb"] - theirs["baseline_mb"])
    print(f"Peak memory: visreps {memory:.2f} of the reference's ({above:.2f} above baseline); target ≤ 0.25: "
          + ("met" if memory <= 0.25 else f"MISSED by {memory / 0.25:.1f}× at these sizes: imports and responses "
             f"are {ours['baseline_mb']:,.0f} MB of visreps' {ours['peak_mb']:,.0f} MB, the reference's "
             f"activations only {n * width * gb:.2f} GB"))
    print(f"Agreement: largest |Δ| of any score {worst:.1e}; target ≤ 1e-6: " + ("met" if worst <= TOLERANCE
                                                                               else "MISSED"))
    print(f"Extrapolation: the straightforward path holds stimuli × {width:,} × 4 B = {n * width * gb:.2f} GB here "
          f"(+ {n * points * PROJECTION_DIM * gb:.2f} GB projected); at NSD size (10,000 stimuli × {width_224:,}) "
          f"{10000 * width_224 * gb:.1f} GB + {10000 * points * PROJECTION_DIM * gb:.1f} GB. visreps holds one batch "
          f"({args.batch_size} × {width:,} × 4 B = {args.batch_size * width * gb * 1e3:.0f} MB here, "
          f"{args.batch_size * width_224 * gb * 1e3:.0f} MB at 224 px) and writes stimuli × {points} × "
          f"{PROJECTION_DIM:,} × 4 B to disk ({n * points * PROJECTION_DIM * gb:.2f} GB here, "
          f"{10000 * points * PROJECTION_DIM * gb:.1f} GB at NSD size), memory-mapped when scored.")



def print_autocast_change(args: argparse.Namespace, exact: dict, autocast: dict) -> None:
    """How much extracting under autocast moves every score, against the fp32 extraction."""
    rows, worst = agreement(exact["results"], autocast["results"])
    print(f"\nScore change from {args.autocast} autocast extraction (fp32 scores shown; Δ = |fp32 − {args.autocast}|; "
          "bold: the selected point changed)")
    print(table([row[:-1] for row in rows], ["region/analysis", "selected point", "score (fp32)", "95 % CI (fp32)",
                                             "max \\|Δ\\| selection (at point)", "\\|Δ\\| score",
                                             "\\|Δ\\| CI low", "\\|Δ\\| CI high"]))
    print(f"Largest |Δ| of any score: {worst:.1e}; extraction {exact['extraction_s']:.1f} s (fp32) vs "
          f"{autocast['extraction_s']:.1f} s ({args.autocast})")


if __name__ == "__main__":
    main()
