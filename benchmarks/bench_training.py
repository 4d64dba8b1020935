"""Training throughput (images/s) of CustomCNN at 224 and custom_cnn_small at 64, side by side.

Each row times full training steps (augmentation on the device, forward, backward, clipping, AdamW) after warm-up
steps. The reference row is the plain path the original code ran: fp32, contiguous (NCHW) tensors, no compile.
Variants: channels-last, bf16 autocast (CPU or GPU), fp16 + GradScaler (GPU), torch.compile. Data sources:
``memory`` (a decoded uint8 tensor, as the demo uses) and ``jpeg`` (files decoded by DataLoader workers), plus
the loader alone, so the data-loading ceiling is visible next to the compute rate.

    python benchmarks/bench_training.py                      # CPU defaults (a few steps each)
    python benchmarks/bench_training.py --device cuda --steps 30 --variants fp32,channels_last,bf16,fp16,compile
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from visreps.models import create_model
from visreps.training.data import BatchStream, DecodedImages
from visreps.training.schedule import build_optimiser
from visreps.training.trainer import resolve_amp
from visreps.data.images import resize_size
from visreps.training.transforms import prepare_batch

VARIANTS = {
    # name: (channels_last, amp mode, compile)
    "fp32": (False, "off", False),
    "channels_last": (True, "off", False),
    "bf16": (True, "bf16", False),
    "fp16": (True, "fp16", False),
    "compile": (True, "off", True),
}


def make_jpegs(folder: Path, n: int, image_size: int, seed: int = 0) -> list[Path]:
    """``n`` random JPEG files about ImageNet-shaped (4:3, a bit larger than the resize target)."""
    rng = np.random.default_rng(seed)
    height = resize_size(image_size) + image_size // 4
    width = height * 4 // 3
    paths = []
    for index in range(n):
        base = rng.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((width, height), Image.BILINEAR)
        path = folder / f"class_{index % 10}" / f"img_{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
        paths.append(path)
    return paths


def train_rate(architecture: str, image_size: int, variant: str, batches, steps: int, warmup: int,
               device: torch.device, row_seconds: float = float("inf")) -> float:
    """Images per second over ``steps`` timed training steps drawn from ``batches`` (an iterable factory).

    Timing stops early (after at least one timed step) once ``row_seconds`` have passed since the first timed step.
    """
    channels_last, amp, use_compile = VARIANTS[variant]
    amp_dtype, use_scaler = resolve_amp(amp, device)
    torch.manual_seed(0)
    network = create_model(architecture, 1000 if image_size >= 224 else 64).to(device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    model = torch.compile(network) if use_compile else network
    optimiser = build_optimiser(network, 5e-4, 1e-3)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    generator = torch.Generator().manual_seed(0)
    model.train()
    done, start = 0, None
    iterator = batches()
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        try:
            images, labels = next(iterator)
        except StopIteration:
            iterator = batches()
            images, labels = next(iterator)
        inputs = prepare_batch(images, True, generator, 0.5, 10.0, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(inputs)
        loss = criterion(logits.float(), labels)
        optimiser.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimiser)
        else:
            loss.backward()
        nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        if scaler is not None:
            scaler.step(optimiser)
            scaler.update()
        else:
            optimiser.step()
        if step >= warmup:
            done += labels.shape[0]
            if time.perf_counter() - start > row_seconds:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return done / (time.perf_counter() - start)


def loader_rate(stream: BatchStream, limit: int) -> float:
    """Images per second the file loader delivers (decode + resize + crop in workers), no training."""
    stream.set_epoch(0)
    iterator = iter(stream)
    next(iterator)  # start the workers
    start, done = time.perf_counter(), 0
    for images, _ in iterator:
        done += images.shape[0]
        if done >= limit:
            break
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default: 3 at 224 on CPU, 10 otherwise)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--models", default="custom_cnn@224,custom_cnn_small@64")
    parser.add_argument("--variants", default="fp32,channels_last,bf16")
    parser.add_argument("--sources", default="memory,jpeg")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--row-seconds", type=float, default=120.0,
                        help="stop timing a row after this long (at least one timed step; bf16 on CPUs without "
                             "native bf16 takes minutes per step at 224)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"device {device}{gpu} | CPU {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__} | "
          f"threads {torch.get_num_threads()} | batch {args.batch}")
    print(f"{'model':<18}{'size':>5} {'variant':<14}{'source':<8}{'images/s':>10}{'vs fp32':>9}")
    with tempfile.TemporaryDirectory() as scratch:
        for spec in args.models.split(","):
            architecture, size_text = spec.split("@")
            image_size = int(size_text)
            steps = args.steps or (3 if image_size >= 224 and device.type == "cpu" else 10)
            n_images = args.batch * 4
            rng = np.random.default_rng(0)
            memory = torch.from_numpy(rng.integers(0, 256, size=(n_images, 3, image_size, image_size), dtype=np.uint8))
            labels = torch.from_numpy(rng.integers(0, 64, size=n_images))
            memory_stream = BatchStream(np.arange(n_images), labels.numpy(), args.batch, device, images=memory,
                                        shuffle=True, seed=0)
            sources = {"memory": lambda: iter(memory_stream)}
            if "jpeg" in args.sources:
                paths = make_jpegs(Path(scratch) / f"{architecture}{image_size}", n_images, image_size)
                files = DecodedImages(paths, labels.numpy(), image_size)
                file_stream = BatchStream(np.arange(n_images), labels.numpy(), args.batch, device, files=files,
                                          shuffle=True, seed=0, num_workers=args.workers)
                sources["jpeg"] = lambda: iter(file_stream)
                rate = loader_rate(file_stream, n_images - args.batch)
                print(f"{architecture:<18}{image_size:>5} {'loader only':<14}{'jpeg':<8}{rate:>10.0f}{'':>9}")
            reference = None
            for variant in args.variants.split(","):
                if variant == "fp16" and device.type != "cuda":
                    print(f"{architecture:<18}{image_size:>5} {variant:<14}{'-':<8}{'(CUDA only)':>10}")
                    continue
                for source in args.sources.split(","):
                    if source == "jpeg" and variant != "channels_last":
                        continue  # one file-fed row per model: the loader ceiling is what it shows
                    try:
                        rate = train_rate(architecture, image_size, variant, sources[source], steps, args.warmup,
                                          device, args.row_seconds)
                    except Exception as error:  # e.g. torch.compile without a C++ compiler
                        print(f"{architecture:<18}{image_size:>5} {variant:<14}{source:<8}  failed: "
                              f"{type(error).__name__}: {str(error).splitlines()[0][:60]}")
                        continue
                    if variant == "fp32" and source == "memory":
                        reference = rate
                    ratio = f"{rate / reference:.2f}x" if reference else ""
                    shown = f"{rate:>10.1f}" if rate < 100 else f"{rate:>10.0f}"
                    print(f"{architecture:<18}{image_size:>5} {variant:<14}{source:<8}{shown}{ratio:>9}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
