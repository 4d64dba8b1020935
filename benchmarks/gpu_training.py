"""The image cases of ``benchmarks/gpu.py``: training from memory and from files, and feature extraction.

Everything runs through visreps' own code: ``Trainer.train_epoch`` (augmentation on the device, forward,
label-smoothed loss, backward, clipping, AdamW) on a ``TrainConfig`` per variant, the ``BatchStream`` of the
in-memory path (``image_source=memory``: ``decode_all`` into a uint8 tensor, held on the GPU), of the file path
(``image_source=files``: ``DecodedImages`` in DataLoader workers) and of the pixel cache (``image_source=cache``:
``CachedImages`` read by the workers), ``ActivationReader`` + ``projection_for`` and ``extract_features``. The
loaders alone are compared with ``torchvision.io.decode_jpeg`` (in the workers on the CPU, batched on the GPU). Rates are steady-state: the clock starts (after a device synchronisation) before batch
``skip`` of an epoch, so start-up, cuDNN autotuning, torch.compile and the loader's ramp-up are left out.
"""

from __future__ import annotations

import collections
import functools
import gc
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torchvision
import torchvision.transforms.v2.functional as tvf
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visreps.data.images import load_rgb, resize_size, scan_class_folders
from visreps.models import create_model, extraction_points
from visreps.training import TrainConfig, Trainer, resolve_amp, training_labels
from visreps.training.data import DecodedImages
from visreps.training.image_cache import CachedImages, build_pixel_cache, pixel_cache_folder
from visreps.training.schedule import parameter_groups
from visreps.training.trainer import set_determinism
from visreps.training.transforms import decode_image

#: images whose decoded pixels are compared with PIL's
PIXEL_CHECK_IMAGES = 32

VARIANTS = {
    # name: (amp, channels_last, compile, optimiser); "plain": torch's default AdamW, "visreps": build_optimiser
    # (fused on CUDA). bf16 is what TrainConfig's defaults give on a CUDA GPU (amp=auto, channels_last=true).
    "fp32": ("off", False, False, "plain"),
    "fused_adamw": ("off", False, False, "visreps"),
    "channels_last": ("off", True, False, "visreps"),
    "bf16": ("bf16", True, False, "visreps"),
    "bf16_compile": ("bf16", True, True, "visreps"),
}


@dataclass
class Sizes:
    """What a run measures: the model, the batch, the JPEG tree and the extraction."""

    architecture: str
    image_size: int
    num_classes: int
    batch: int
    batches: int  # per epoch (the tree holds batch × batches images)
    skip: int  # batches per epoch before the clock starts
    workers: int
    compute_steps: int
    extract_batches: int


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    """Free what the last measurement left (graphs, compiled code, cached GPU blocks)."""
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def write_jpeg_tree(root: Path, n_images: int, image_size: int, classes: int = 10, threads: int = 8) -> Path:
    """``n_images`` JPEGs (4:3, a little larger than the resize target, as bench_training.make_jpegs draws them)
    in ``root/class_NN/`` folders, written by ``threads`` threads."""
    height = resize_size(image_size) + image_size // 4
    width = height * 4 // 3
    for label in range(classes):
        (root / f"class_{label:02d}").mkdir(parents=True, exist_ok=True)

    def write(index: int) -> None:
        rng = np.random.default_rng([0, index])
        base = rng.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((width, height), Image.BILINEAR)
        image.save(root / f"class_{index % classes:02d}" / f"img_{index:06d}.jpg", quality=90)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(n_images)))
    return root


class SteadyStream:
    """A trainer's batch stream that synchronises and starts the clock before fetching batch ``skip``."""

    def __init__(self, stream: Any, skip: int, device: torch.device) -> None:
        self.stream, self.skip, self.device = stream, skip, device
        self.started, self.images = 0.0, 0

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self):
        iterator = iter(self.stream)
        for index in range(len(self.stream)):
            if index == self.skip:
                synchronize(self.device)
                self.started = time.perf_counter()
            images, labels = next(iterator)
            if index >= self.skip:
                self.images += images.shape[0]
            yield images, labels

    def rate(self) -> float:
        """Images per second since the clock started (call after the work has been synchronised)."""
        return self.images / (time.perf_counter() - self.started)


def make_trainer(tree: Path, sizes: Sizes, variant: str, device: torch.device, image_source: str) -> Trainer:
    """visreps' Trainer for ``variant`` on the tree (all images train: nothing held out)."""
    amp, channels_last, use_compile, optimiser = VARIANTS[variant]
    config = TrainConfig(
        dataset={"root": str(tree), "heldout_fraction": 0.0},
        model={"architecture": sizes.architecture, "image_size": sizes.image_size},
        epochs=1, batch_size=sizes.batch, amp=amp, channels_last=channels_last, compile=use_compile,
        image_source=image_source, num_workers=sizes.workers, device=str(device), progress=False,
    )
    labels = training_labels(scan_class_folders(tree), None, num_classes=sizes.num_classes, heldout_fraction=0.0)
    trainer = Trainer(config, labels)
    if optimiser == "plain":
        trainer.optimiser = torch.optim.AdamW(parameter_groups(trainer.network, config.weight_decay), lr=config.lr)
    return trainer


def trainer_rate(trainer: Trainer, skip: int, loader_only: bool = False) -> float:
    """Steady images/s of one ``train_epoch`` (or of its batch stream alone, ``loader_only``)."""
    stream = SteadyStream(trainer.train_stream, skip, trainer.device)
    if loader_only:
        stream.set_epoch(0)
        collections.deque(stream, maxlen=0)  # draw every batch, keep none
        synchronize(trainer.device)
        return stream.rate()
    trainer.train_stream = stream
    trainer.train_epoch(0)
    synchronize(trainer.device)
    return stream.rate()


def compute_rate(sizes: Sizes, variant: str, device: torch.device) -> float:
    """The model's pure compute rate with ``variant``'s options: forward + loss + backward on a synthetic
    normalised batch already on the device (no data, no augmentation, no optimiser step)."""
    amp, channels_last, use_compile, _ = VARIANTS[variant]
    amp_dtype, _ = resolve_amp(amp, device)
    set_determinism(False)
    torch.manual_seed(0)
    network = create_model(sizes.architecture, sizes.num_classes).to(device)
    inputs = torch.randn(sizes.batch, 3, sizes.image_size, sizes.image_size, device=device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    model = torch.compile(network) if use_compile else network
    model.train()
    targets = torch.randint(0, sizes.num_classes, (sizes.batch,), device=device)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    started = 0.0
    for step in range(sizes.skip + sizes.compute_steps):
        if step == sizes.skip:
            synchronize(device)
            started = time.perf_counter()
        network.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(inputs)
        criterion(logits.float(), targets).backward()
    synchronize(device)
    return sizes.compute_steps * sizes.batch / (time.perf_counter() - started)


def guarded(label: str, work: Callable[[], Any], failures: list[str]) -> Any:
    """``work()``, or None after printing one line when it raises (the other rows still run)."""
    try:
        return work()
    except Exception as error:  # a variant that fails (no compiler for torch.compile, OOM) must not stop the rest
        message = f"{label}: failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:160] if str(error) else ''}"
        print("  " + message, flush=True)
        failures.append(message)
        return None


SOURCE_LABELS = {"memory": "memory", "files": "files ({workers} loader workers)",
                 "cache": "pixel cache ({workers} loader workers)"}


def training_rows(tree: Path, sizes: Sizes, variants: list[str], device: torch.device, image_source: str,
                  compute: dict[str, float], failures: list[str]) -> tuple[list[list[str]], dict[str, float]]:
    """Rows (variant, source, images/s, vs fp32, pure compute, fraction) and the rates, from ``image_source``
    (memory | files | cache; the cache must be built)."""
    rows, rates = [], {}
    source = SOURCE_LABELS[image_source].format(workers=sizes.workers)
    for variant in variants:
        if variant not in compute:
            compute[variant] = guarded(f"{variant} compute", lambda: compute_rate(sizes, variant, device), failures)
            release(device)
        trainer = guarded(variant, lambda: make_trainer(tree, sizes, variant, device, image_source), failures)
        rate = guarded(variant, lambda: trainer_rate(trainer, sizes.skip), failures) if trainer else None
        del trainer
        release(device)
        if rate is None:
            continue
        rates[variant] = rate
        pure = compute.get(variant)
        base = rates.get("fp32")
        rows.append([variant_label(variant, device), source, f"{rate:,.1f}", f"{rate / base:.2f}×" if base else "",
                     f"{pure:,.1f}" if pure else "", f"{rate / pure:.0%}" if pure else ""])
        print(f"  {source} {variant}: {rate:,.1f} images/s" + (f" (compute {pure:,.1f})" if pure else ""), flush=True)
    return rows, rates


class EncodedFiles(Dataset):
    """Item i: (the file's bytes as a uint8 tensor, label); decoded later, on the device."""

    def __init__(self, paths: list[Path], labels: np.ndarray) -> None:
        self.paths, self.labels = [str(path) for path in paths], labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torchvision.io.read_file(self.paths[index]), int(self.labels[index])


def resize_crop_tensor(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> (3, S, S): shorter edge to ``resize_size(S)`` (bilinear, antialiased), centre crop."""
    resized = tvf.resize(image, [resize_size(image_size)], interpolation=tvf.InterpolationMode.BILINEAR, antialias=True)
    return tvf.center_crop(resized, [image_size, image_size])


class TorchvisionDecoded(EncodedFiles):
    """Item i: ``torchvision.io.decode_jpeg`` of the file, resized and cropped on the CPU (in a loader worker)."""

    def __init__(self, paths: list[Path], labels: np.ndarray, image_size: int) -> None:
        super().__init__(paths, labels)
        self.image_size = image_size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        data, label = super().__getitem__(index)
        return resize_crop_tensor(torchvision.io.decode_jpeg(data), self.image_size), label


def keep_list(batch: list) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [item[0] for item in batch], torch.tensor([item[1] for item in batch])


def loader_rate(dataset: Dataset, sizes: Sizes, device: torch.device, collate: Callable | None = None,
                on_device: Callable | None = None) -> float:
    """Steady images/s of a DataLoader over ``dataset`` (sizes.workers processes, shuffled, pinned on CUDA) with
    every batch on ``device`` as uint8 (B, 3, S, S) (``on_device`` finishes a batch there: GPU decoding)."""
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(dataset, batch_size=sizes.batch, shuffle=True, generator=generator,
                        num_workers=sizes.workers, collate_fn=collate, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if sizes.workers else None, drop_last=True)
    images, started = 0, 0.0
    for index, (batch, _) in enumerate(loader):
        if index == sizes.skip:
            synchronize(device)
            started, images = time.perf_counter(), 0
        batch = on_device(batch) if on_device else batch.to(device, non_blocking=True)
        images += batch.shape[0]
    synchronize(device)
    return images / (time.perf_counter() - started)


def pixels_versus_pil(paths: list[Path], image_size: int, images: torch.Tensor) -> str:
    """How far uint8 ``images`` (n, 3, S, S) of ``paths`` are from the training decode (PIL, ``decode_image``):
    the largest and the mean absolute difference in grey levels, and the share of values that differ."""
    reference = torch.stack([decode_image(path, image_size) for path in paths]).int()
    difference = (images.cpu().int() - reference).abs()
    return (f"max {int(difference.max())}, mean {difference.float().mean().item():.2f}, "
            f"{(difference > 0).float().mean().item():.2%} differ")


def decoding_rows(tree: Path, sizes: Sizes, device: torch.device, failures: list[str]
                  ) -> tuple[list[list[str]], dict[str, float]]:
    """The training loader's ways of getting uint8 (B, 3, S, S) batches onto the device, each alone: PIL in the
    workers (``image_source=files``), ``torchvision.io.decode_jpeg`` in the workers, decode_jpeg batched on the
    device (CUDA only), the pixel cache (``image_source=cache``, built first and timed); each with its pixels'
    difference from PIL's on the first ``PIXEL_CHECK_IMAGES`` images."""
    collection = scan_class_folders(tree)
    paths = [collection.path(i) for i in range(len(collection))]
    labels = collection.fine_labels
    rows, rates = [], {}

    def build() -> float:
        started = time.perf_counter()
        build_pixel_cache(collection, sizes.image_size, num_workers=sizes.workers, progress=False)
        return len(paths) / (time.perf_counter() - started)

    def gpu_decode(batch: list[torch.Tensor]) -> torch.Tensor:
        decoded = torchvision.io.decode_jpeg(batch, device=device)
        return torch.stack([resize_crop_tensor(image, sizes.image_size) for image in decoded])

    def cached() -> CachedImages:
        return CachedImages(pixel_cache_folder(collection, sizes.image_size), labels)

    workers, check = f"{sizes.workers} loader workers", list(range(min(PIXEL_CHECK_IMAGES, len(paths))))
    torchvision_files = TorchvisionDecoded(paths, labels, sizes.image_size)
    cases = [("pil", "PIL decode + resize + crop (image_source=files)", workers,
              lambda: loader_rate(DecodedImages(paths, labels, sizes.image_size), sizes, device), None),
             ("torchvision_cpu", "torchvision.io.decode_jpeg + resize + crop, CPU", workers,
              lambda: loader_rate(torchvision_files, sizes, device),
              lambda: torch.stack([torchvision_files[i][0] for i in check]))]
    if device.type == "cuda":
        encoded = EncodedFiles(paths, labels)
        cases.append(("torchvision_gpu", "file bytes; decode_jpeg batched + resize + crop on the GPU", workers,
                      lambda: loader_rate(encoded, sizes, device, keep_list, gpu_decode),
                      lambda: gpu_decode([encoded[i][0] for i in check])))
    cases += [("cache_build", "`visreps image_cache`: PIL decode into the pixel cache, once", workers, build, None),
              ("cache", "pixel cache read (image_source=cache)", workers,
               lambda: loader_rate(cached(), sizes, device, CachedImages.collate_fn),
               lambda: cached().__getitems__(check)[0])]
    for key, label, source, work, sample in cases:
        rate = guarded(f"decode {key}", work, failures)
        if rate is None:
            continue
        rates[key] = rate
        base = rates.get("pil")
        pixels = "(the reference)" if key == "pil" else "as the cache" if sample is None else guarded(
            f"pixels {key}", lambda: pixels_versus_pil([paths[i] for i in check], sizes.image_size, sample()),
            failures) or "failed"
        rows.append([label, source, f"{rate:,.0f}", f"{rate / base:.2f}×" if base else "", pixels])
        print(f"  loader {key}: {rate:,.0f} images/s; pixels vs PIL: {pixels}", flush=True)
    return rows, rates


def variant_label(variant: str, device: torch.device) -> str:
    amp, channels_last, use_compile, optimiser = VARIANTS[variant]
    adamw = "AdamW (torch default)" if optimiser == "plain" else (
        "fused AdamW" if device.type == "cuda" else "AdamW (build_optimiser; not fused on CPU)")
    parts = ["bf16 autocast" if amp == "bf16" else "fp32", "channels-last" if channels_last else "NCHW", adamw]
    return f"{variant}: " + ", ".join(parts + (["torch.compile"] if use_compile else []))


class TreeImages:
    """``load_image`` of a StimulusSet over a class-folder tree: image id = path relative to ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, image_id: str) -> Image.Image:
        return load_rgb(self.root / image_id)


def extraction_rows(tree: Path, sizes: Sizes, device: torch.device, failures: list[str]
                    ) -> tuple[list[list[str]], dict[str, float]]:
    """Extraction images/s: plain forward, the 14 points + projection on device tensors (fp32, bf16), and
    ``extract_features`` from the JPEG files into the on-disk cache (projected to 4,096 per point)."""
    import visreps.activations.cache as cache_module
    from visreps.activations import ActivationReader, StimulusSet, extract_features
    from visreps.alignment.selection import projection_for
    from visreps.models.transforms import eval_transform

    torch.manual_seed(0)
    model = create_model(sizes.architecture, sizes.num_classes).eval().to(device)
    points = extraction_points(model)
    inputs = torch.randn(sizes.batch, 3, sizes.image_size, sizes.image_size, device=device)
    steps = sizes.extract_batches
    projections = functools.lru_cache(maxsize=None)(projection_for)  # the same seeded matrices, built once
    rows, rates = [], {}

    def timed(step: Callable[[], Any]) -> float:
        for _ in range(sizes.skip):
            step()
        synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        return steps * sizes.batch / (time.perf_counter() - started)

    def plain() -> float:
        with torch.inference_mode():
            return timed(lambda: model(inputs))

    def points_projected(autocast: bool) -> float:
        with ActivationReader(model, points) as reader:
            def step():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    outputs = reader(inputs)
                return [projections(int(v.shape[1]), 4096, 0).project(v.float(), device=device).cpu()
                        for v in outputs.values()]
            return timed(step)

    def build_seconds() -> float:
        with ActivationReader(model, points) as reader:
            widths = [int(v.shape[1]) for v in reader(inputs[:1]).values()]
        started = time.perf_counter()
        for width in widths:
            projections(width, 4096, 0)
        return time.perf_counter() - started

    def from_files() -> float:
        collection = scan_class_folders(tree)
        keys = collection.keys[:sizes.batch * (sizes.skip + steps)]
        stimuli = StimulusSet(tuple(keys), tuple((key,) for key in keys), TreeImages(tree), "bench-gpu-tree")
        original, cache_module.projection_for = cache_module.projection_for, projections
        try:
            with tempfile.TemporaryDirectory() as cache_root:
                started = time.perf_counter()
                extract_features(model, stimuli, eval_transform(sizes.image_size), points, cache_root=cache_root,
                                 weights_fingerprint="bench-gpu-random", projection_dim=4096, projection_seed=0,
                                 batch_size=sizes.batch, num_workers=sizes.workers, device=device)
                return len(keys) / (time.perf_counter() - started)
        finally:
            cache_module.projection_for = original

    build = guarded("projection build", build_seconds, failures)
    cases = [("plain", "plain forward, fp32, no hooks (baseline)", "device tensors", plain),
             ("points", f"{len(points)} points + projection to 4,096, fp32, to host", "device tensors",
              lambda: points_projected(False)),
             ("points_bf16", f"{len(points)} points + projection, bf16 autocast, to host", "device tensors",
              lambda: points_projected(True)),
             ("files", f"extract_features, fp32, {len(points)} points projected, into the cache",
              f"JPEG files ({sizes.workers} loader workers)", from_files)]
    for key, label, source, work in cases:
        rate = guarded(f"extract {key}", work, failures)
        release(device)
        if rate is None:
            continue
        rates[key] = rate
        base = rates.get("plain")
        rows.append([label, source, f"{rate:,.1f}", f"{rate / base:.0%}" if base else ""])
        print(f"  extraction {key}: {rate:,.1f} images/s", flush=True)
    if build is not None:
        rates["build_s"] = build
    return rows, rates
