"""GPU speed (issue 16): training, extraction, the RSA bootstrap and ridge on one GPU, each next to its baseline.

Cases (``--cases``, run in this order; each guarded, so one failure prints a line and the rest go on):

- ``rsa``: RSA bootstrap, Spearman, N = 1,000 stimuli × 1,000 iterations × 90 % (``bootstrap_rsa``): the torch
  backend on the GPU and numba on the CPU vs the plain path (one ``scipy.stats.spearmanr`` per resample, the
  first ``--loop-iterations`` timed and scaled); max |Δ| of the distributions. Target: < 1 s on the GPU.
- ``ridge``: ``fit_ridge_cv`` + predict on NSD-sized data (8,000 × 4,096 → 15,000 targets, 1,000 test,
  5 folds × 20 alphas) on ``--device`` vs himalaya ``RidgeCV`` (backend ``torch_cuda`` on a GPU, ``torch`` on
  CPU; skipped when himalaya is not importable) in the same run; the achieved fraction of the device's own fp32
  GEMM rate over the exact search's multiply-adds (2 × 5 × 20 × n_val × p × targets FLOPs). Targets: ≥ 3×
  himalaya torch_cuda; on CPU ≥ 80 % of the GEMM rate.
- ``train``: CustomCNN (K = 1,000) at 224 px, batch 256, through visreps' ``Trainer.train_epoch`` from memory
  (``image_source=memory``: the decoded uint8 tensor on the GPU), per variant: plain fp32 (NCHW, torch's default
  AdamW), fused AdamW, channels-last, bf16 autocast (the CUDA defaults), + torch.compile; next to the model's
  pure compute rate with the same options (forward + backward of a synthetic batch on the device). Target:
  ≥ 70 % of the pure compute rate.
- ``files``: a generated JPEG class-folder tree. First the loaders alone (uint8 batches onto the device): PIL in
  DataLoader workers (``image_source=files``), ``torchvision.io.decode_jpeg`` in the workers, decode_jpeg batched
  on the GPU, building the pixel cache (``visreps image_cache``) and reading it (``image_source=cache``); then
  the trainer fed from the files and from the pixel cache. Target: ≥ 80 % of the pure compute rate.
- ``extract``: images/s of a plain forward, of the 14 points + projection to 4,096 on device tensors (fp32 and
  bf16 autocast), and of ``extract_features`` from the JPEG files into the on-disk cache. The projection
  matrices are built once (timed apart; ``extract_features`` rebuilds them on every call).

    python benchmarks/gpu.py                          # a GPU machine: all cases, ~5 minutes on an H200
    python benchmarks/gpu.py --smoke                  # every case at tiny sizes on CPU (~25 s on 2 cores)
    python benchmarks/gpu.py --cases rsa,ridge --device cpu   # full-size CPU figures (ridge: minutes)
    python benchmarks/gpu.py --cases train --variants fp32,bf16 --batches 20

See benchmarks/README.md ("GPU") for the command on a GPU machine without network access.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # helpers; this checkout's visreps
from bench_alignment_common import machine_line, table  # noqa: E402
from gpu_training import (  # noqa: E402
    VARIANTS,
    Sizes,
    decoding_rows,
    extraction_rows,
    release,
    synchronize,
    training_rows,
    write_jpeg_tree,
)

CASES = ("rsa", "ridge", "train", "files", "extract")
SMOKE_VARIANTS = "fp32,fused_adamw,channels_last,bf16"  # torch.compile on CPU takes minutes: ask for it explicitly


def sizes_for(args: argparse.Namespace) -> tuple[Sizes, dict[str, int]]:
    """Image sizes and alignment sizes: full (the issue's) or tiny (``--smoke``)."""
    workers = args.workers if args.workers is not None else max(1, min(14, (os.cpu_count() or 2) - 2))
    if args.smoke:
        images = Sizes("custom_cnn_small", 64, 64, args.batch or 8, args.batches or 6, 2, workers, 8, 3)
        alignment = dict(stimuli=60, iterations=50, loop=5, n_train=300, n_test=60, features=64, targets=200,
                         gemm=512)
    else:
        images = Sizes("custom_cnn", 224, 1000, args.batch or 256, args.batches or 40, 5, workers, 20, 20)
        alignment = dict(stimuli=1000, iterations=1000, loop=args.loop_iterations, n_train=8000, n_test=1000,
                         features=4096, targets=args.targets, gemm=4096)
    return images, alignment


def machine(device: torch.device) -> str:
    """GPU name, driver, CUDA, cuDNN, torch, Python, CPU."""
    parts = [f"torch {torch.__version__}", f"Python {platform.python_version()}", machine_line(),
             f"torch threads {torch.get_num_threads()}", f"CPU {torch.backends.cpu.get_cpu_capability()}"]
    if os.path.isdir("/dev/shm"):  # DataLoader workers hand batches over through it
        parts.append(f"/dev/shm {shutil.disk_usage('/dev/shm').total / 2**30:.0f} GiB")
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            driver = "unknown (no nvidia-smi)"
        parts = [f"GPU {properties.name} ({properties.total_memory / 2**30:.0f} GiB, {properties.multi_processor_count} "
                 f"SMs, capability {properties.major}.{properties.minor})", f"driver {driver}",
                 f"CUDA {torch.version.cuda}", f"cuDNN {torch.backends.cudnn.version()}",
                 f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32} / conv {torch.backends.cudnn.allow_tf32}"] + parts
    return "; ".join(parts)


def timed(work, device: torch.device) -> tuple[float, object]:
    synchronize(device)
    started = time.perf_counter()
    result = work()
    synchronize(device)
    return time.perf_counter() - started, result


def gemm_rate(device: torch.device, size: int, repeats: int = 5) -> float:
    """The device's own fp32 matrix-product rate (FLOP/s) on size × size operands."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=generator)
    b = torch.randn(size, size, device=device, generator=generator)
    for _ in range(2):
        a @ b
    seconds, _ = timed(lambda: [a @ b for _ in range(repeats)], device)
    return 2 * size**3 * repeats / seconds


def case_rsa(args: argparse.Namespace, sizes: dict[str, int], device: torch.device, verdicts: list[str]) -> None:
    from bench_alignment_rsa_bootstrap import make_rdms

    from visreps.alignment import Resampling, bootstrap_rsa
    from visreps.alignment._rank_kernels import HAVE_NUMBA
    from visreps.alignment.reference_loops import rsa_resample_scores_loop

    n, iterations, loop_n = sizes["stimuli"], sizes["iterations"], min(sizes["loop"], sizes["iterations"])
    model, neural = make_rdms(n)
    paths = [("torch", device)] if device.type == "cuda" or args.smoke else []
    paths += [("numba", torch.device("cpu"))] if HAVE_NUMBA else []
    started = time.perf_counter()
    counts = Resampling(n, iterations, seed=0).counts()
    loop = rsa_resample_scores_loop([model], neural, counts[:loop_n], "spearman")[:, 0]
    loop_seconds = (time.perf_counter() - started) * iterations / loop_n
    rows = []
    for backend, where in paths:
        bootstrap_rsa(model[:50, :50], neural[:50, :50], n_iterations=2, backend=backend, device=where)  # warm-up
        runs = [timed(lambda: bootstrap_rsa(model, neural, n_iterations=iterations, backend=backend, device=where),
                      where) for _ in range(args.repeats)]
        seconds = float(np.median([s for s, _ in runs]))
        delta = np.abs(runs[0][1].distribution[:loop_n] - loop).max()
        rows.append([f"visreps bootstrap_rsa, {backend} on {where.type}", f"{seconds:.3f}",
                     f"{loop_seconds / seconds:,.0f}×", f"{delta:.1e}"])
        if where.type == "cuda":
            verdicts.append(f"RSA bootstrap N={n} × {iterations} on the GPU: {seconds:.3f} s; target < 1 s: "
                            + ("met" if seconds < 1 else "MISSED"))
    rows.append([f"plain: SciPy spearmanr per resample ({loop_n} iterations, time scaled)", f"{loop_seconds:.1f}",
                 "1×", "0"])
    print(f"\nRSA bootstrap (Spearman), N = {n} stimuli, {iterations} iterations × 90 %; median of {args.repeats}")
    print(table(rows, ["path", "seconds", "vs plain", f"max |Δ| vs plain ({loop_n} iterations)"]))


def ridge_data(sizes: dict[str, int], device: torch.device) -> dict[str, torch.Tensor]:
    """Low-rank-plus-noise features and targets (bench_alignment_encoding.make_data's recipe), on ``device``."""
    g = torch.Generator(device=device).manual_seed(0)
    n, p, t = sizes["n_train"] + sizes["n_test"], sizes["features"], sizes["targets"]
    x = (torch.randn(n, 64, device=device, generator=g) @ torch.randn(64, p, device=device, generator=g) * 0.3
         + torch.randn(n, p, device=device, generator=g))
    weights = torch.randn(p, t, device=device, generator=g) / p**0.5 * torch.rand(t, device=device, generator=g)
    y = x @ weights + torch.randn(n, t, device=device, generator=g)
    cut = sizes["n_train"]
    return {"x_train": x[:cut], "x_test": x[cut:], "y_train": y[:cut], "y_test": y[cut:]}


def himalaya_fit(data: dict[str, torch.Tensor], device: torch.device):
    """himalaya RidgeCV (same 20 alphas, cv=5, no intercept) on data z-scored with training statistics."""
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV

    from visreps.alignment import DEFAULT_ALPHAS

    backend = set_backend("torch_cuda" if device.type == "cuda" else "torch")

    def zscore(train: torch.Tensor, other: torch.Tensor | None = None):
        mean, scale = train.mean(0), train.std(0, unbiased=False) + 1e-8
        return (train - mean) / scale, None if other is None else (other - mean) / scale

    x_train, x_test = zscore(data["x_train"], data["x_test"])
    model = RidgeCV(alphas=DEFAULT_ALPHAS, cv=5, solver_params={"warn": False}).fit(x_train, zscore(data["y_train"])[0])
    return torch.as_tensor(backend.to_numpy(model.predict(x_test)))


def case_ridge(args: argparse.Namespace, sizes: dict[str, int], device: torch.device, verdicts: list[str]) -> None:
    from visreps.alignment import fit_ridge_cv, pearson_columns

    def ours(data):
        return fit_ridge_cv(data["x_train"], data["y_train"], device=device).predict(data["x_test"], device=device)

    tiny = ridge_data(dict(n_train=200, n_test=20, features=32, targets=10), device)
    try:
        import himalaya
        himalaya_version = himalaya.__version__
    except ImportError:
        himalaya_version = None
    ours(tiny)  # warm-up: CUDA context, cuBLAS/cuSOLVER handles
    if himalaya_version:
        himalaya_fit(tiny, device)
    data = ridge_data(sizes, device)
    y_test = data["y_test"].cpu()
    rows, seconds = [], {}
    runs = [("visreps", ours)] + ([("himalaya", lambda d: himalaya_fit(d, device))] if himalaya_version else [])
    r = {}
    for name, work in runs:
        seconds[name], predictions = timed(lambda: work(data), device)
        r[name] = pearson_columns(predictions.cpu(), y_test).numpy()
        print(f"  ridge {name}: {seconds[name]:.2f} s", flush=True)
        release(device)
    gemm = gemm_rate(device, sizes["gemm"])
    n_val = sizes["n_train"] / 5
    flops = 2 * 5 * 20 * n_val * sizes["features"] * sizes["targets"]
    label = {"visreps": f"visreps fit_ridge_cv + predict ({device.type})",
             "himalaya": f"himalaya {himalaya_version} RidgeCV, backend {'torch_cuda' if device.type == 'cuda' else 'torch'}"}
    for name in seconds:
        delta = f"{np.abs(r[name] - r['visreps']).max():.1e}"
        rows.append([label[name], f"{seconds[name]:.2f}", f"{seconds.get('himalaya', np.nan) / seconds[name]:.2f}×",
                     f"{r[name].mean():.6f}", delta, f"{flops / seconds[name] / 1e9:,.0f}",
                     f"{flops / seconds[name] / gemm:.0%}"])
    print(f"\nRidge, {sizes['n_train']:,} × {sizes['features']:,} → {sizes['targets']:,} targets, {sizes['n_test']:,} test, "
          f"5 folds × 20 alphas on {device}; exact search {flops / 1e12:.2f} TFLOP; own fp32 GEMM "
          f"({sizes['gemm']}³) {gemm / 1e9:,.0f} GFLOP/s" + ("" if himalaya_version else "; himalaya not importable: skipped"))
    print(table(rows, ["path", "seconds", "vs himalaya", "test mean r", "max |Δr| vs visreps", "GFLOP/s (exact search)",
                       "of own GEMM"]))
    if device.type == "cuda" and "himalaya" in seconds:
        ratio = seconds["himalaya"] / seconds["visreps"]
        verdicts.append(f"ridge at {sizes['targets']:,} targets: {ratio:.2f}× himalaya torch_cuda; target ≥ 3×: "
                        + ("met" if ratio >= 3 else "MISSED"))
    fraction = flops / seconds["visreps"] / gemm
    target = " (target on CPU ≥ 80 %: " + ("met" if fraction >= 0.8 else "MISSED") + ")" if device.type == "cpu" else ""
    verdicts.append(f"ridge on {device.type}: {fraction:.0%} of the device's own fp32 GEMM rate{target}")


def case_images(case: str, args: argparse.Namespace, sizes: Sizes, device: torch.device, tree: Path,
                state: dict, verdicts: list[str], failures: list[str]) -> None:
    header = (f"{sizes.architecture} (K={sizes.num_classes}) at {sizes.image_size} px, batch {sizes.batch}, "
              f"{sizes.batches} batches per epoch, clock from batch {sizes.skip}")
    compute = state.setdefault("compute", {})
    if case == "extract":
        rows, rates = extraction_rows(tree, sizes, device, failures)
        print(f"\nExtraction, {header.split(', clock')[0]}, {sizes.extract_batches} timed batches"
              + (f"; projection matrices of the 14 points built once in {rates['build_s']:.1f} s" if "build_s" in rates else ""))
        print(table(rows, ["path", "source", "images/s", "of plain forward"]))
        return
    variants = (args.variants or (SMOKE_VARIANTS if args.smoke else ",".join(VARIANTS))).split(",")
    if case == "train":
        rows, trained = training_rows(tree, sizes, variants, device, "memory", compute, failures)
    else:
        variants = args.file_variants.split(",") if args.file_variants else variants
        loader_rows, loaders = decoding_rows(tree, sizes, device, failures)
        print(f"\nLoaders alone: uint8 batches of {sizes.batch} at {sizes.image_size} px onto {device}, "
              f"clock from batch {sizes.skip}")
        print(table(loader_rows, ["path", "source", "images/s", "vs PIL", "pixels vs PIL (grey levels)"]))
        rows, trained = training_rows(tree, sizes, variants, device, "files", compute, failures)
        if "cache_build" in loaders:
            cache_rows, cache_rates = training_rows(tree, sizes, variants, device, "cache", compute, failures)
            rows += cache_rows
            trained.update({f"{variant} (cache)": rate for variant, rate in cache_rates.items()})
    print(f"\nTraining ({'from memory' if case == 'train' else 'from files and from the pixel cache'}), {header}")
    print(table(rows, ["variant", "source", "images/s", "vs fp32", "pure compute images/s (same options)",
                       "of pure compute"]))
    best_compute = max((v for v in compute.values() if v), default=None)
    if trained and best_compute:
        best = max(trained, key=trained.get)
        fraction, goal = trained[best] / best_compute, (0.7 if case == "train" else 0.8)
        verdicts.append(f"training {'from memory' if case == 'train' else 'from disk'}: best {best} "
                        f"{trained[best]:,.1f} images/s = {fraction:.0%} of the best pure compute rate "
                        f"({best_compute:,.1f}); target ≥ {goal:.0%}: " + ("met" if fraction >= goal else "MISSED"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu (cpu with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="every case at tiny sizes on CPU")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--variants", default="", help=f"training variants, of {', '.join(VARIANTS)} (default all)")
    parser.add_argument("--file-variants", default="fp32,bf16,bf16_compile", help="variants fed from files")
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument("--batches", type=int, default=0, help="batches per epoch (the JPEG tree's size)")
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default: CPUs − 2, ≤ 14)")
    parser.add_argument("--targets", type=int, default=15000)
    parser.add_argument("--loop-iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=420.0, help="start no case after this long")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    if args.smoke and args.file_variants == parser.get_default("file_variants"):
        args.file_variants = "fp32,bf16"
    cases = [case for case in args.cases.split(",") if case]
    unknown = sorted(set(cases) - set(CASES)) + sorted(set(args.variants.split(",") if args.variants else []) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown case or variant {', '.join(unknown)}")
    image_sizes, alignment_sizes = sizes_for(args)
    started = time.perf_counter()
    print(("SMOKE (tiny sizes, not figures) | " if args.smoke else "") + machine(device), flush=True)
    verdicts: list[str] = []
    failures: list[str] = []
    state: dict = {}
    with tempfile.TemporaryDirectory(prefix="visreps-gpu-bench-") as scratch:
        os.environ["VISREPS_HOME"] = str(Path(scratch) / "visreps-home")  # the pixel cache and listings: scratch
        tree = None
        for case in [c for c in CASES if c in cases]:
            if time.perf_counter() - started > args.max_seconds:
                print(f"\n{case}: skipped (past --max-seconds {args.max_seconds:.0f})")
                failures.append(f"{case}: skipped (time)")
                continue
            case_started = time.perf_counter()
            try:
                if case in ("rsa", "ridge"):
                    (case_rsa if case == "rsa" else case_ridge)(args, alignment_sizes, device, verdicts)
                else:
                    if tree is None:
                        n_images = image_sizes.batch * image_sizes.batches
                        tree = write_jpeg_tree(Path(scratch) / "tree", n_images, image_sizes.image_size,
                                               threads=max(2, os.cpu_count() or 2))
                        print(f"\n  JPEG tree: {n_images:,} files in {time.perf_counter() - case_started:.1f} s", flush=True)
                    case_images(case, args, image_sizes, device, tree, state, verdicts, failures)
            except Exception as error:  # one case's failure must not stop the others
                print(f"\n{case}: failed: {type(error).__name__}: {str(error).strip()[:300]}", flush=True)
                failures.append(f"{case}: {type(error).__name__}")
            release(device)
            print(f"  ({case}: {time.perf_counter() - case_started:.1f} s)", flush=True)
    print(f"\nSummary ({time.perf_counter() - started:.0f} s in all" + (", SMOKE: sizes are tiny, no target applies" if args.smoke else "") + ")")
    for line in verdicts:
        print(f"- {line}")
    for line in failures:
        print(f"- FAILED {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
