"""The training loop of docs/method.md §2: AdamW + warm-up/cosine per epoch, label smoothing, clipping, real mixed precision.

Reproducibility: the network is initialised after ``torch.manual_seed(seed)``; each epoch's data order is the
permutation seeded by ``seed + epoch``; augmentation draws from a ``torch.Generator`` and dropout from the global
generator, both re-seeded at the start of every epoch from (seed, epoch, rank). A run resumed from the checkpoint
of epoch e therefore repeats epochs e+1.. exactly (bitwise on CPU with ``deterministic=true``).

Mixed precision (``amp``): bf16 autocast, or fp16 autocast with a GradScaler (CUDA only); ``auto`` picks bf16 on
GPUs that support it, fp16 on older GPUs, and fp32 on CPU. Metrics per epoch: train_loss, train_accuracy (running,
over the batches just trained — the training set is never re-evaluated), heldout_loss, heldout_accuracy (the 20 %),
lr, images_per_second, epoch_seconds; epoch 0 is the untrained network on the held-out images.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from visreps.config import config_hash
from visreps.models import IMAGENET_MEAN, IMAGENET_STD, create_model, unwrap_model
from visreps.training import checkpoints as ckpt
from visreps.training.config import TrainConfig
from visreps.training.data import BatchStream, DecodedImages, TrainingLabels, decode_all, resolve_image_source
from visreps.training.distributed import DistContext, all_reduce_sums, barrier, pick_device
from visreps.training.errors import TrainingError, is_out_of_memory, out_of_memory_error
from visreps.training.image_cache import CachedImages, pixel_cache_folder, read_complete_meta
from visreps.training.schedule import build_optimiser, build_scheduler
from visreps.training.transforms import prepare_batch


class TrainerCallbacks(Protocol):
    """What a stage hears from the trainer (rank 0 only)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, epoch: int, path: Path) -> None: ...


@dataclass
class TrainResult:
    """The trained network (unwrapped, on the training device) and what happened."""

    model: nn.Module
    history: list[dict[str, float]]
    metadata: dict[str, Any]
    checkpoint_dir: Path | None
    resumed_from: Path | None = None
    epochs_trained: int = 0
    seconds: float = 0.0


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers (seed, epoch, rank, stream) through NumPy's SeedSequence."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def resolve_amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler) for ``amp`` = auto | bf16 | fp16 | off on ``device``."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None, False
    if mode == "auto":
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    if mode == "bf16":
        return torch.bfloat16, False
    if device.type != "cuda":
        raise TrainingError("amp=fp16 needs a CUDA device (fp16 autocast with a GradScaler); use amp=bf16 or amp=off on CPU")
    return torch.float16, True


def set_determinism(enabled: bool) -> None:
    """Deterministic kernels (and no cuDNN autotuning) when ``enabled``; fast autotuned kernels otherwise."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy's and Python's global generators (library code never relies on them)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class Trainer:
    """Train ``config.model`` on ``labels`` (one process, or one DDP rank of ``context``)."""

    def __init__(self, config: TrainConfig, labels: TrainingLabels, *, context: DistContext | None = None,
                 checkpoint_dir: str | Path | None = None, callbacks: TrainerCallbacks | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self.config = config
        self.labels = labels
        self.context = context or DistContext(device=pick_device(config.device))
        self.device = self.context.device
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.callbacks = callbacks if self.context.is_main else None
        self.image_size = config.image_size
        self.config_dump = config.model_dump(mode="json")
        self.config_hash = config_hash(config)
        self.amp_dtype, use_scaler = resolve_amp(config.amp, self.device)
        set_determinism(config.deterministic)
        seed_everything(config.seed)
        self.network = create_model(config.model.architecture, labels.num_classes, **config.model.options).to(self.device)
        if config.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.metadata = {
            "architecture": config.model.architecture,
            "model_kwargs": dict(config.model.options),
            "num_classes": labels.num_classes,
            "K": labels.num_classes,
            "image_size": self.image_size,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "label_source": config.label_source,
            "label_table": config.labels.table,
            "labels_fingerprint": labels.fingerprint,
            "seed": config.seed,
            "epochs": config.epochs,
            "config_hash": self.config_hash,
            **(metadata or {}),
        }
        self.optimiser = build_optimiser(self.network, config.lr, config.weight_decay)
        self.scheduler = build_scheduler(self.optimiser, config.epochs, config.warmup_epochs,
                                         config.warmup_start_factor, config.final_lr_factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if use_scaler else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.train_stream, self.heldout_stream = self._streams()
        model: nn.Module = self.network
        if self.context.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        self.train_model = torch.compile(model) if config.compile else model

    # ------------------------------------------------------------ data

    def _streams(self) -> tuple[BatchStream, BatchStream]:
        config, labels, context = self.config, self.labels, self.context
        collection = labels.collection
        paths = [collection.root / key for key in collection.keys]
        common = dict(device=self.device, rank=context.rank, world_size=context.world_size)
        cache = pixel_cache_folder(collection, self.image_size)
        cached = read_complete_meta(cache) is not None
        self.image_source = resolve_image_source(config.image_source, len(paths), self.image_size, cached)
        if self.image_source == "memory":
            images = CachedImages(cache, labels.labels).all_images() if cached else decode_all(
                paths, self.image_size, threads=max(2, config.num_workers), progress=config.progress and context.is_main)
            source = dict(images=images)
        elif self.image_source == "cache":
            source = dict(files=CachedImages(cache, labels.labels), num_workers=config.num_workers)
        else:
            source = dict(files=DecodedImages(paths, labels.labels, self.image_size), num_workers=config.num_workers)
        train = BatchStream(labels.train_indices, labels.labels, config.batch_size, shuffle=True, seed=config.seed,
                            **source, **common)
        heldout = BatchStream(labels.heldout_indices, labels.labels, max(config.batch_size, 256), shuffle=False,
                              **source, **common)
        return train, heldout

    # ------------------------------------------------------------ steps

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    def _bar(self, iterable, description: str, total: int):
        return tqdm(iterable, desc=description, total=total, leave=False, dynamic_ncols=True,
                    disable=None if (self.config.progress and self.context.is_main) else True)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over this rank's training shard; returns loss, accuracy, lr and throughput."""
        config = self.config
        self.train_model.train()
        self.train_stream.set_epoch(epoch)
        torch.manual_seed(derive_seed(config.seed, epoch, self.context.rank, 0))
        generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, self.context.rank, 1))
        lr = self.optimiser.param_groups[0]["lr"]
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        count = 0
        start = time.perf_counter()
        bar = self._bar(self.train_stream, f"epoch {epoch + 1}/{config.epochs}", len(self.train_stream))
        for step, (images, targets) in enumerate(bar):
            inputs = prepare_batch(images, True, generator, config.flip_probability, config.rotation_degrees,
                                   config.channels_last)
            with self._autocast():
                logits = self.train_model(inputs)
            loss = self.criterion(logits.float(), targets)
            self.optimiser.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimiser)
            else:
                loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.network.parameters(), config.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.optimiser)
                self.scaler.update()
            else:
                self.optimiser.step()
            batch = targets.shape[0]
            loss_sum += loss.detach().double() * batch
            correct += (logits.detach().argmax(1) == targets).sum()
            count += batch
            if step % 20 == 0 and getattr(bar, "disable", True) is False:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        total_loss, total_correct, total_count = all_reduce_sums(
            self.context, [loss_sum.item(), float(correct.item()), float(count)], self.device)
        train_loss = total_loss / max(total_count, 1)
        if not np.isfinite(train_loss):
            raise TrainingError(
                f"training diverged in epoch {epoch + 1}: the loss is {train_loss}; lower lr (now {config.lr}) "
                "or set amp=off"
            )
        self._sync_buffers()
        return {
            "train_loss": train_loss,
            "train_accuracy": total_correct / max(total_count, 1),
            "lr": lr,
            "images_per_second": total_count / max(seconds, 1e-9),
            "epoch_seconds": seconds,
        }

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm statistics (DDP averages gradients, not buffers)."""
        if self.context.enabled:
            for buffer in self.network.buffers():
                torch.distributed.broadcast(buffer, src=0)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss (same criterion as training) and top-1 accuracy on the held-out images, over all ranks."""
        if len(self.labels.heldout_indices) == 0:
            return {}
        self.network.eval()
        loss_sum, correct, count = 0.0, 0.0, 0.0
        for images, targets in self._bar(self.heldout_stream, "held-out", len(self.heldout_stream)):
            inputs = prepare_batch(images, False, channels_last=self.config.channels_last)
            with self._autocast():
                logits = self.network(inputs)
            loss_sum += float(self.criterion(logits.float(), targets)) * targets.shape[0]
            correct += float((logits.argmax(1) == targets).sum())
            count += targets.shape[0]
        loss_sum, correct, count = all_reduce_sums(self.context, [loss_sum, correct, count], self.device)
        return {"heldout_loss": loss_sum / count, "heldout_accuracy": correct / count}

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, epoch: int, history: list[dict[str, float]]) -> Path | None:
        """Rank 0 writes ``epoch_NNN.pt`` and prunes older local ones (``epoch_000.pt`` is kept)."""
        path = None
        if self.context.is_main and self.checkpoint_dir is not None:
            path = ckpt.save_checkpoint(
                self.checkpoint_dir / ckpt.checkpoint_name(epoch), epoch=epoch,
                model_state=self.network.state_dict(), optimizer_state=self.optimiser.state_dict(),
                scheduler_state=self.scheduler.state_dict(),
                scaler_state=self.scaler.state_dict() if self.scaler is not None else None,
                config=self.config_dump, config_hash=self.config_hash, metadata=self.metadata, history=history,
            )
            for old_epoch, old_path in ckpt.list_checkpoints(self.checkpoint_dir):
                if old_epoch not in (0, epoch):
                    old_path.unlink(missing_ok=True)
            if self.callbacks is not None:
                self.callbacks.on_checkpoint(epoch, path)
        barrier(self.context)
        return path

    def resume(self, path: str | Path) -> tuple[int, list[dict[str, float]]]:
        """Restore everything from checkpoint ``path``; returns (epochs completed, metric history)."""
        payload = ckpt.load_checkpoint(path)
        ckpt.check_compatible(payload, path, self.config_dump, self.config_hash, self.metadata)
        try:
            self.network.load_state_dict(payload["model"])
            self.optimiser.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ckpt.CheckpointError(f"cannot resume from {path}: {str(error).splitlines()[0]}") from None
        self.scheduler.load_state_dict(payload["scheduler"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        ckpt.restore_rng_state(payload["rng"])
        return int(payload["epoch"]), list(payload.get("history", []))

    # ------------------------------------------------------------ the loop

    def _should_checkpoint(self, epochs_done: int) -> bool:
        every = self.config.checkpoint_every
        return epochs_done == self.config.epochs or (every > 0 and epochs_done % every == 0)

    def _report(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.callbacks is not None:
            self.callbacks.on_epoch_end(epoch, metrics)
        if self.config.progress and self.context.is_main:
            shown = ", ".join(f"{key} {value:.4g}" for key, value in metrics.items() if key != "epoch")
            tqdm.write(f"epoch {epoch}/{self.config.epochs}: {shown}")

    def fit(self, resume: bool = True) -> TrainResult:
        """Train all remaining epochs (resuming from the newest local checkpoint when ``resume``)."""
        started = time.perf_counter()
        first_epoch, history, resumed_from = 0, [], None
        if resume and self.checkpoint_dir is not None:
            resumed_from = ckpt.latest_checkpoint(self.checkpoint_dir)
            if resumed_from is not None:
                first_epoch, history = self.resume(resumed_from)
                for entry in history:
                    if self.callbacks is not None:
                        self.callbacks.on_epoch_end(int(entry["epoch"]), entry)
        try:
            if resumed_from is None:
                baseline = {"epoch": 0, **self.evaluate()}
                history.append(baseline)
                self._report(0, baseline)
                self.save_checkpoint(0, history)
            for epoch in range(first_epoch, self.config.epochs):
                metrics = self.train_epoch(epoch)
                self.scheduler.step()
                metrics.update(self.evaluate())
                entry = {"epoch": epoch + 1, **metrics}
                history.append(entry)
                self._report(epoch + 1, entry)
                if self._should_checkpoint(epoch + 1):
                    self.save_checkpoint(epoch + 1, history)
        except RuntimeError as error:
            if is_out_of_memory(error):
                raise out_of_memory_error(self.config.batch_size, str(self.device), error) from None
            raise
        return TrainResult(unwrap_model(self.network), history, {**self.metadata, "epoch": self.config.epochs},
                           self.checkpoint_dir, resumed_from, self.config.epochs - first_epoch,
                           time.perf_counter() - started)
