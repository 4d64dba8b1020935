"""Coarse labels for an image collection: decode images (DataLoader workers), extract features, PCA, median bits.

``derive_coarse_labels`` is the whole labels computation without any tracking: the stage logs its result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from visreps.data.base import DatasetError
from visreps.data.images import ImageCollection, load_rgb
from visreps.labels.coarse import bits_for_k, check_ks, check_nesting, coarse_labels, median_thresholds
from visreps.labels.errors import LabelError
from visreps.labels.pca import PCAResult, check_n_components
from visreps.labels.sources import FeatureSource
from visreps.labels.streaming import streaming_pca
from visreps.labels.tables import _raise_on_duplicates

CorruptPolicy = Literal["fail", "skip"]


class ImageFiles(Dataset):
    """Item i: (transformed image or None, collection position, error message or "") for ``positions[i]``."""

    def __init__(self, collection: ImageCollection, positions: np.ndarray, transform) -> None:
        _raise_on_duplicates(collection.keys, f"image collection at {collection.root}")
        self.root = Path(collection.root)
        self.keys = collection.keys
        self.positions = np.asarray(positions, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, item: int):
        position = int(self.positions[item])
        try:
            image = load_rgb(self.root / self.keys[position])
        except DatasetError as error:
            return None, position, str(error)
        return self.transform(image), position, ""


def collate_images(items) -> tuple[torch.Tensor | None, np.ndarray, list[tuple[int, str]]]:
    """(stacked images of the readable items or None, their positions, [(position, message)] of the others)."""
    good = [(image, position) for image, position, message in items if not message]
    failed = [(position, message) for _, position, message in items if message]
    images = torch.stack([image for image, _ in good]) if good else None
    return images, np.asarray([position for _, position in good], dtype=np.int64), failed


def image_feature_batches(collection: ImageCollection, source: FeatureSource, *, batch_size: int, num_workers: int,
                          device: torch.device, on_corrupt: CorruptPolicy, skipped: dict[int, str]):
    """A batch factory (see ``streaming_pca``) yielding (positions, features) for images of ``collection``."""

    def make(positions: np.ndarray) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        loader = DataLoader(
            ImageFiles(collection, positions, source.transform), batch_size=batch_size, shuffle=False,
            num_workers=num_workers, collate_fn=collate_images, pin_memory=device.type == "cuda",
        )
        for images, good, failed in loader:
            for position, message in failed:
                if on_corrupt == "fail":
                    raise DatasetError(f"{message}; or set dataset.on_corrupt_image=skip to leave such images out")
                skipped[position] = message
            if images is not None:
                yield good, source.features(images.to(device, non_blocking=True))

    return make


@dataclass
class CoarseLabelSet:
    """Labels of the readable images of a collection (rows in collection order; skipped images left out).

    ``positions`` index the collection; ``split`` is "train"/"heldout"; ``fit`` marks the rows whose
    features and medians defined the PCA and the thresholds; ``projections`` (n, n_pcs) float64;
    ``thresholds`` (n_pcs,) medians over the fit rows; ``labels[K]`` (n,) int64; ``skipped`` key -> message.
    """

    collection: ImageCollection
    positions: np.ndarray
    split: np.ndarray
    fit: np.ndarray
    projections: np.ndarray
    thresholds: np.ndarray
    labels: dict[int, np.ndarray]
    pca: PCAResult
    feature_dim: int
    nesting: dict[str, bool]
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return [self.collection.keys[i] for i in self.positions]

    @property
    def fine_labels(self) -> np.ndarray:
        return self.collection.fine_labels[self.positions]


def resolve_n_pcs(ks: list[int], n_pcs: int | None) -> int:
    """``n_pcs`` (default log2 of the largest K); LabelError if fewer than the largest K needs."""
    needed = bits_for_k(max(ks))
    if n_pcs is None:
        return needed
    if n_pcs < needed:
        raise LabelError(f"n_pcs={n_pcs} is too few for K={max(ks)}, which needs {needed} PCs; raise n_pcs or lower ks")
    return int(n_pcs)


def probe_feature_dim(collection: ImageCollection, source: FeatureSource, on_corrupt: CorruptPolicy = "fail",
                      device: str | torch.device = "cpu") -> int:
    """Feature width D of ``source`` on the first readable image (the source must already be on ``device``)."""
    for position in range(len(collection)):
        try:
            image = load_rgb(collection.path(position))
        except DatasetError as error:
            if on_corrupt == "fail":
                raise DatasetError(f"{error}; or set dataset.on_corrupt_image=skip to leave such images out") from None
            continue
        with torch.inference_mode():
            return int(source.features(source.transform(image).unsqueeze(0).to(device)).shape[1])
    raise DatasetError(f"no readable image in {collection.root}")


def derive_coarse_labels(
    collection: ImageCollection,
    source: FeatureSource,
    heldout: np.ndarray,
    ks: list[int],
    *,
    n_pcs: int | None = None,
    fit_split: Literal["train", "all"] = "train",
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    on_corrupt: CorruptPolicy = "fail",
    cache_file: str | Path | None = None,
    progress: bool = True,
) -> CoarseLabelSet:
    """Streaming PCA of ``source`` features of ``collection`` and the median-split labels for each K.

    ``heldout`` (N,) bool marks held-out images; with ``fit_split="train"`` only the others fit the PCA and
    set the medians (all images get labels). Bad K, n_pcs or split raise LabelError before any image is read
    (beyond one probe image that gives the feature width).
    """
    ks = check_ks(ks)
    n_pcs = resolve_n_pcs(ks, n_pcs)
    heldout = np.asarray(heldout, dtype=bool)
    if heldout.shape != (len(collection),):
        raise LabelError(f"heldout mask has shape {heldout.shape}; expected ({len(collection)},)")
    if fit_split not in ("train", "all"):
        raise LabelError(f"fit_split must be 'train' or 'all', got {fit_split!r}")
    fit_mask = ~heldout if fit_split == "train" else np.ones(len(collection), dtype=bool)
    device = torch.device(device)
    source.to(device)
    check_n_components(n_pcs, probe_feature_dim(collection, source, on_corrupt, device), int(fit_mask.sum()))
    skipped: dict[int, str] = {}
    make = image_feature_batches(collection, source, batch_size=batch_size, num_workers=num_workers,
                                 device=device, on_corrupt=on_corrupt, skipped=skipped)
    started = time.perf_counter()
    result = streaming_pca(make, len(collection), fit_mask, n_pcs, device=device, cache_file=cache_file,
                           progress=progress)
    positions = np.flatnonzero(result.seen)
    projections = result.projections[positions]
    fit = fit_mask[positions]
    thresholds = median_thresholds(projections, fit)
    labels = coarse_labels(projections, thresholds, ks)
    seconds = time.perf_counter() - started
    return CoarseLabelSet(
        collection=collection, positions=positions,
        split=np.where(heldout[positions], "heldout", "train").astype(object), fit=fit,
        projections=projections, thresholds=thresholds, labels=labels, pca=result.pca,
        feature_dim=result.feature_dim, nesting=check_nesting(labels),
        skipped={collection.keys[p]: message for p, message in sorted(skipped.items())},
        timings={"seconds_fit": result.seconds_fit, "seconds_project": result.seconds_project,
                 "seconds_total": seconds, "images_per_second": len(positions) / max(seconds, 1e-9)},
    )
