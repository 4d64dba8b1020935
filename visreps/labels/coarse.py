"""Median splits of principal-component projections packed into nested coarse labels.

For the first n PCs: bit_j = projection_j > median_j (medians over the *fit* rows only); the label at
K = 2ⁿ is the n bits read as a binary integer with PC1 the most significant bit, so
label at K = (label at 2K) >> 1 — the label sets nest.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from visreps.labels.errors import LabelError

MAX_K = 1024


def bits_for_k(k: int) -> int:
    """log2(K) for a checked power of two."""
    return int(k).bit_length() - 1


def check_ks(ks: Iterable[int]) -> list[int]:
    """Sorted unique K values; each must be a power of two in 2..1024 (LabelError otherwise)."""
    checked: list[int] = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise LabelError(f"K={k!r} is not an integer; K must be a power of two: 2, 4, 8, ..., {MAX_K}")
        k = int(k)
        if k < 2 or k > MAX_K or k & (k - 1):
            raise LabelError(f"K={k} is not a power of two between 2 and {MAX_K}; use e.g. ks=[2,4,8,16,32,64]")
        checked.append(k)
    if not checked:
        raise LabelError("no K given; use e.g. ks=[2,4,8,16,32,64]")
    return sorted(set(checked))


def median_thresholds(projections: np.ndarray, fit_mask: np.ndarray | None = None) -> np.ndarray:
    """Per-column median of ``projections`` (N, n) over the rows where ``fit_mask`` is True (all if None)."""
    projections = np.asarray(projections, dtype=np.float64)
    if projections.ndim != 2:
        raise LabelError(f"projections must be (images, PCs), got shape {projections.shape}")
    rows = projections if fit_mask is None else projections[np.asarray(fit_mask, dtype=bool)]
    if rows.shape[0] == 0:
        raise LabelError("no fit images to take medians over; check the split (pca.fit_split)")
    if not np.isfinite(rows).all():
        raise LabelError("projections hold NaN or inf values; check the feature source")
    return np.median(rows, axis=0)


def binary_codes(projections: np.ndarray, thresholds: np.ndarray, n_bits: int) -> np.ndarray:
    """Labels in 0..2**n_bits − 1 (int64): bit j (PC j+1) is ``projections[:, j] > thresholds[j]``, PC1 the MSB."""
    projections = np.asarray(projections, dtype=np.float64)
    if projections.ndim != 2 or projections.shape[1] < n_bits or len(thresholds) < n_bits:
        raise LabelError(
            f"{n_bits} bits need {n_bits} projection columns and thresholds; "
            f"got projections {projections.shape} and {len(thresholds)} thresholds"
        )
    bits = projections[:, :n_bits] > np.asarray(thresholds[:n_bits], dtype=np.float64)
    weights = np.left_shift(np.int64(1), np.arange(n_bits - 1, -1, -1, dtype=np.int64))
    return bits.astype(np.int64) @ weights


def coarse_labels(projections: np.ndarray, thresholds: np.ndarray, ks: Iterable[int]) -> dict[int, np.ndarray]:
    """Labels for each K in ``ks`` (dict K -> (N,) int64), all derived from the finest code by right shifts."""
    ks = check_ks(ks)
    n_bits = bits_for_k(ks[-1])
    finest = binary_codes(projections, thresholds, n_bits)
    return {k: finest >> (n_bits - bits_for_k(k)) for k in ks}


def check_nesting(labels_by_k: dict[int, np.ndarray]) -> dict[str, bool]:
    """For each pair of consecutive K in the dict: is label at K == label at K' >> log2(K'/K)?"""
    ks = sorted(labels_by_k)
    result: dict[str, bool] = {}
    for coarse, fine in zip(ks, ks[1:]):
        shift = bits_for_k(fine) - bits_for_k(coarse)
        result[f"k{coarse}_in_k{fine}"] = bool(np.array_equal(labels_by_k[coarse], labels_by_k[fine] >> shift))
    return result


def class_sizes(labels: np.ndarray, k: int) -> np.ndarray:
    """Images per class (k,), int64; a label outside 0..k−1 is an error."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise LabelError(f"labels range {labels.min()}..{labels.max()} is outside 0..{k - 1} for K={k}")
    return np.bincount(labels, minlength=k).astype(np.int64)
