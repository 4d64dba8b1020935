"""Training data: labels matched to a class-folder collection, the split, and fast batch streams.

- ``training_labels``: the collection's folder classes (``table=None``, "fine") or a label table from the labels
  stage (columns image, label[, split]) matched by relative path with ``visreps.labels.tables.validate_label_table``
  (unknown or unlabelled images, labels ≥ K, K < 2 are errors). The split is ``train_heldout_split`` (seeded
  80/20 over the sorted keys); a table's own split column must agree with it.
- ``BatchStream``: seeded per-epoch batches of decoded uint8 images, either from a tensor decoded once into
  memory (``decode_all``; the demo's 6,000 64×64 images take 74 MB) or from files through a DataLoader with
  worker processes, pinned memory and persistent workers.
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from visreps.data.images import ImageCollection, train_heldout_split
from visreps.labels.tables import validate_label_table
from visreps.training.errors import TrainingError
from visreps.training.transforms import decode_image

IN_MEMORY_MAX_IMAGES = 20_000
IN_MEMORY_MAX_BYTES = 2 * 1024**3
_K_IN_NAME = re.compile(r"(?:^|[^a-z0-9])k(\d+)(?:[^0-9]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class TrainingLabels:
    """Labels of every image of ``collection`` (collection order) and the train/held-out split."""

    collection: ImageCollection
    labels: np.ndarray
    num_classes: int
    train_indices: np.ndarray
    heldout_indices: np.ndarray
    source: str

    @property
    def fingerprint(self) -> str:
        """SHA-256 (16 hex) of keys, labels, K and split: equal fingerprints mean the same training task."""
        digest = hashlib.sha256(f"K={self.num_classes}\n".encode())
        for key, label in zip(self.collection.keys, self.labels.tolist()):
            digest.update(f"{key}\t{label}\n".encode())
        digest.update(self.heldout_indices.astype(np.int64).tobytes())
        return digest.hexdigest()[:16]

    def class_counts(self, indices: np.ndarray) -> np.ndarray:
        """Images per class among ``indices`` ((K,) int64)."""
        return np.bincount(self.labels[indices], minlength=self.num_classes)


def infer_num_classes(table_name: str, labels: np.ndarray) -> int:
    """K from a ``k<K>`` part of the table's name (``label_tables/k8.parquet``), else max label + 1."""
    match = _K_IN_NAME.search(Path(str(table_name)).name)
    if match:
        return int(match.group(1))
    return int(labels.max()) + 1 if labels.size else 0


def _split_from_column(table: pd.DataFrame, collection: ImageCollection) -> np.ndarray:
    position = collection.index_of()
    heldout = np.zeros(len(collection), dtype=bool)
    rows = table["split"].astype(str).str.lower() != "train"
    heldout[[position[key] for key in table.loc[rows, "image"].astype(str)]] = True
    return heldout


def training_labels(collection: ImageCollection, table: pd.DataFrame | None = None, *, table_name: str = "fine",
                    num_classes: int | None = None, heldout_fraction: float = 0.2, split_seed: int = 42,
                    allow_unlabelled: bool = False) -> TrainingLabels:
    """Labels for ``collection`` from its folders (``table=None``) or a label table, with the seeded split.

    The split is drawn over the whole collection (as the labels stage does); with ``allow_unlabelled`` images
    the table does not list get label −1 and are left out of both parts.
    """
    if table is None:
        labels = np.asarray(collection.fine_labels, dtype=np.int64)
        k = num_classes if num_classes is not None else len(collection.class_names)
        if labels.size and labels.max() >= k:
            raise TrainingError(f"the collection has {len(collection.class_names)} classes but labels.num_classes={k}")
    else:
        raw = pd.to_numeric(table["label"], errors="coerce").to_numpy() if "label" in table else np.zeros(0)
        k = num_classes if num_classes is not None else infer_num_classes(table_name, np.nan_to_num(raw).astype(np.int64))
        if k < 2:
            raise TrainingError(f"label table {table_name} has K={k}; a classifier needs K >= 2 classes")
        labels = validate_label_table(table, collection, num_classes=k, allow_missing=allow_unlabelled,
                                      name=f"label table {table_name}")
    if k < 2:
        raise TrainingError(f"labels {table_name!r} give K={k}; a classifier needs K >= 2 classes")
    train, heldout = train_heldout_split(len(collection), heldout_fraction, split_seed)
    if table is not None and "split" in table.columns:
        expected = np.zeros(len(collection), dtype=bool)
        expected[heldout] = True
        listed = labels >= 0
        disagree = int((_split_from_column(table, collection) != expected)[listed].sum())
        if disagree:
            raise TrainingError(
                f"label table {table_name}: its split column differs from train_heldout_split(heldout_fraction="
                f"{heldout_fraction}, seed={split_seed}) for {disagree} image(s); set dataset.heldout_fraction and "
                "dataset.split_seed to the values the labels stage used (held-out images must not inform the labels)"
            )
    train, heldout = train[labels[train] >= 0], heldout[labels[heldout] >= 0]
    if len(train) == 0:
        raise TrainingError(f"no labelled training images left after holding out {heldout_fraction:.0%} of {len(collection)}")
    return TrainingLabels(collection, labels, int(k), train, heldout, table_name)


# ---------------------------------------------------------------- decoding


class DecodedImages(Dataset):
    """File-backed dataset: item i is (uint8 tensor (3, S, S) of ``paths[i]``, label i)."""

    def __init__(self, paths: list[Path], labels: np.ndarray, image_size: int) -> None:
        self.paths = [str(path) for path in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return decode_image(self.paths[index], self.image_size), int(self.labels[index])


_DECODED_CACHE: dict[tuple[str, int], torch.Tensor] = {}


def decode_all(paths: list[Path], image_size: int, threads: int = 2, progress: bool = True) -> torch.Tensor:
    """Every image decoded once: uint8 (N, 3, S, S). Cached per process (the last two file lists × sizes)."""
    digest = hashlib.sha256("\n".join(str(path) for path in paths).encode()).hexdigest()
    key = (digest, int(image_size))
    if key in _DECODED_CACHE:
        return _DECODED_CACHE[key]
    images = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)

    def fill(index: int) -> None:
        images[index] = decode_image(paths[index], image_size)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(tqdm(pool.map(fill, range(len(paths))), total=len(paths), desc="decoding images",
                  disable=None if progress else True, leave=False))
    while len(_DECODED_CACHE) >= 2:
        _DECODED_CACHE.pop(next(iter(_DECODED_CACHE)))
    _DECODED_CACHE[key] = images
    return images


def fits_in_memory(n_images: int, image_size: int) -> bool:
    """Whether ``image_source=auto`` holds the images in memory: up to 20,000 images and 2 GiB of pixels."""
    return n_images <= IN_MEMORY_MAX_IMAGES and n_images * 3 * image_size**2 <= IN_MEMORY_MAX_BYTES


def resolve_image_source(mode: str, n_images: int, image_size: int, cache_complete: bool) -> str:
    """``image_source`` -> memory | files | cache. auto: memory when ``fits_in_memory`` (read from the pixel
    cache when it is complete, else decoded), else the pixel cache when complete, else the files."""
    if mode == "cache" and not cache_complete:
        raise TrainingError(f"image_source=cache but no complete pixel cache exists for these images at {image_size} px; "
                            f"build it with `visreps image_cache root=<dataset.root> image_size={image_size}`")
    if mode != "auto":
        return mode
    if fits_in_memory(n_images, image_size):
        return "memory"
    return "cache" if cache_complete else "files"


# ---------------------------------------------------------------- batches


class BatchStream:
    """Batches ``(uint8 images (B, 3, S, S), labels (B,))`` on ``device`` from the images at ``indices``.

    ``shuffle=True`` (training): each epoch's order is a permutation seeded by ``seed + epoch``
    (``DistributedSampler``; under DDP each rank takes its shard, padded so all ranks step equally often); a
    final batch of one image is dropped (BatchNorm cannot normalise it). ``shuffle=False`` (evaluation): the
    indices in order, rank r taking every ``world_size``-th image, nothing padded or dropped.
    Source: a decoded tensor (``images``) or a dataset of (uint8 image, label) items (``DecodedImages`` or the
    pixel cache's ``CachedImages``, whose ``collate_fn`` is used) read by ``num_workers`` loader processes.
    """

    def __init__(self, indices: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device, *,
                 images: torch.Tensor | None = None, files: Dataset | None = None, shuffle: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0) -> None:
        if (images is None) == (files is None):
            raise ValueError("BatchStream needs exactly one of images= or files=")
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.device = device
        self.shuffle = shuffle
        self.epoch = 0
        self.sampler = None
        if shuffle:
            self.sampler = DistributedSampler(range(len(self.indices)), num_replicas=world_size, rank=rank,
                                              shuffle=True, seed=seed, drop_last=False)
            self._positions = None
        else:
            self._positions = np.arange(rank, len(self.indices), world_size)
        self.images = None
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.loader = None
        if images is not None:
            on_gpu = device.type == "cuda"
            self.images = images.to(device) if on_gpu else images
            self.labels = self.labels.to(device) if on_gpu else self.labels
        else:
            subset = torch.utils.data.Subset(files, self.indices.tolist())
            sampler = self.sampler if shuffle else self._positions.tolist()
            self.loader = DataLoader(
                subset, batch_size=self.batch_size, sampler=sampler, num_workers=num_workers,
                pin_memory=device.type == "cuda", persistent_workers=num_workers > 0,
                collate_fn=getattr(files, "collate_fn", None),
                prefetch_factor=4 if num_workers > 0 else None, drop_last=False,
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)

    def _order(self) -> np.ndarray:
        return np.asarray(list(self.sampler), dtype=np.int64) if self.shuffle else self._positions

    def n_images(self) -> int:
        """Images this process sees per pass (after DDP padding, before dropping a singleton batch)."""
        return len(self.sampler) if self.shuffle else len(self._positions)

    def __len__(self) -> int:
        n = self.n_images()
        batches = -(-n // self.batch_size)
        if self.shuffle and n % self.batch_size == 1 and batches > 1:
            batches -= 1
        return batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n_batches = len(self)
        if self.loader is not None:
            for number, (images, labels) in enumerate(self.loader):
                if number >= n_batches:
                    break
                yield (images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))
            return
        order = self._order()
        for number in range(n_batches):
            chosen = self.indices[order[number * self.batch_size:(number + 1) * self.batch_size]]
            index = torch.from_numpy(chosen).to(self.images.device)
            images = self.images.index_select(0, index)
            labels = self.labels.index_select(0, index)
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
