"""Two-pass streaming PCA over feature batches: pass 1 accumulates the fit rows' covariance, pass 2 projects.

Rows arrive as ``(row_indices, features)`` batches from a factory ``make_batches(rows)`` that can be called
twice (a second forward pass). With ``cache_file``, pass 1 also appends the L2-normalised features as
float16 to that file and pass 2 reads them back instead of calling the factory again (N·D·2 bytes on disk,
read sequentially; never mapped whole into memory). Memory: O(D²) accumulators + O(N·n_components) projections.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from visreps.labels.errors import LabelError
from visreps.labels.pca import CovarianceAccumulator, PCAResult, check_n_components, pca_from_accumulator

BatchFactory = Callable[[np.ndarray], Iterable[tuple[np.ndarray, torch.Tensor]]]


@dataclass(frozen=True)
class StreamingPCAResult:
    """``projections`` (N, n_components) float64, NaN in rows never delivered (``seen`` False)."""

    pca: PCAResult
    projections: np.ndarray
    seen: np.ndarray
    feature_dim: int
    seconds_fit: float
    seconds_project: float


def l2_normalise(rows: torch.Tensor) -> torch.Tensor:
    """Rows divided by their Euclidean norm (float64; an all-zero row stays zero)."""
    rows = rows.to(torch.float64)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def array_batches(features: np.ndarray, batch_size: int = 1024) -> BatchFactory:
    """A batch factory over an in-memory (N, D) array (tests, small data)."""
    features = np.asarray(features)

    def make(rows: np.ndarray) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        for start in range(0, len(rows), batch_size):
            chunk = np.asarray(rows[start : start + batch_size])
            yield chunk, torch.as_tensor(features[chunk])

    return make


def streaming_pca(
    make_batches: BatchFactory,
    n_rows: int,
    fit_mask: np.ndarray,
    n_components: int,
    *,
    device: str | torch.device = "cpu",
    normalise: bool = True,
    cache_file: str | Path | None = None,
    progress: bool = False,
) -> StreamingPCAResult:
    """Fit PCA on the rows where ``fit_mask`` is True (L2-normalised first if ``normalise``) and project all rows."""
    fit_mask = np.asarray(fit_mask, dtype=bool)
    if fit_mask.shape != (n_rows,):
        raise LabelError(f"fit_mask has shape {fit_mask.shape}; expected ({n_rows},)")
    device = torch.device(device)
    seen = np.zeros(n_rows, dtype=bool)
    order: list[np.ndarray] = []
    accumulator: CovarianceAccumulator | None = None
    cache = open(cache_file, "wb") if cache_file else None
    started = time.perf_counter()
    try:
        with tqdm(total=n_rows, desc="labels pass 1/2: features + covariance", unit="img", disable=not progress) as bar:
            for rows, features in make_batches(np.arange(n_rows)):
                rows = np.asarray(rows, dtype=np.int64)
                rows_t = l2_normalise(features.to(device)) if normalise else features.to(device, torch.float64)
                if accumulator is None:
                    accumulator = CovarianceAccumulator(rows_t.shape[1], device)
                    check_n_components(n_components, accumulator.dim, int(fit_mask.sum()))
                if seen[rows].any():
                    raise LabelError("a batch factory delivered the same row twice; image keys must be unique")
                accumulator.update(rows_t[torch.as_tensor(fit_mask[rows], device=device)])
                seen[rows] = True
                if cache is not None:
                    cache.write(rows_t.to(torch.float16).cpu().numpy().tobytes())
                    order.append(rows)
                bar.update(len(rows))
    finally:
        if cache is not None:
            cache.close()
    if accumulator is None:
        raise LabelError("no features were produced (every image was skipped); check the dataset and source")
    pca = pca_from_accumulator(accumulator, n_components)
    seconds_fit = time.perf_counter() - started

    started = time.perf_counter()
    projector = pca.projector(device)
    projections = np.full((n_rows, n_components), np.nan)
    done = np.zeros(n_rows, dtype=bool)
    with tqdm(total=int(seen.sum()), desc="labels pass 2/2: projections", unit="img", disable=not progress) as bar:
        for rows, rows_t in _second_pass(make_batches, seen, order, cache_file, accumulator.dim, normalise, device):
            projections[rows] = projector(rows_t).cpu().numpy()
            done[rows] = True
            bar.update(len(rows))
    if not np.array_equal(done, seen):
        raise LabelError(
            f"the second pass delivered {int(done.sum())} rows but the first {int(seen.sum())}; "
            "the feature source is not repeatable (enable pca.cache_features)"
        )
    return StreamingPCAResult(pca, projections, seen, accumulator.dim, seconds_fit, time.perf_counter() - started)


def _second_pass(make_batches, seen, order, cache_file, dim, normalise, device):
    if cache_file is None:
        for rows, features in make_batches(np.flatnonzero(seen)):
            rows_t = l2_normalise(features.to(device)) if normalise else features.to(device, torch.float64)
            yield np.asarray(rows, dtype=np.int64), rows_t
        return
    with open(cache_file, "rb") as cache:
        for rows in order:
            block = np.fromfile(cache, dtype=np.float16, count=len(rows) * dim)
            if block.size != len(rows) * dim:
                raise LabelError(f"feature cache {cache_file} is truncated; delete it and run again")
            yield rows, torch.from_numpy(block.reshape(len(rows), dim)).to(device, torch.float64)
