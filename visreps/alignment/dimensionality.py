"""Effective dimensionality of a representation: the participation ratio of its covariance eigenvalues.

PR = (Σ λᵢ)² / Σ λᵢ², between 1 (one direction holds all variance) and the rank of the covariance (all
directions equal). It needs no eigendecomposition: Σλ = tr C and Σλ² = ‖C‖²_F, and the stimulus Gram matrix
(n × n) of the centred features shares C's nonzero eigenvalues (up to the factor n − 1), so a 290,400-wide layer
costs one n × n matrix product. ``covariance_eigenvalues`` gives the spectrum itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from visreps.alignment.validation import AlignmentInputError, check_matrix


def participation_ratio(eigenvalues: Any) -> float:
    """(Σλ)² / Σλ² of non-negative eigenvalues (1-D); tiny negative values from round-off count as 0."""
    values = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if values.size == 0 or not np.isfinite(values).all():
        raise AlignmentInputError("eigenvalues must be a non-empty array of finite numbers")
    scale = np.abs(values).max()
    if (values < -1e-8 * max(scale, 1e-300)).any():
        raise AlignmentInputError(f"eigenvalues must be non-negative (a covariance), got minimum {values.min():.3g}")
    values = np.clip(values, 0.0, None)
    squares = float(np.square(values).sum())
    if squares == 0.0:
        raise AlignmentInputError("all eigenvalues are 0: the features are constant, their dimensionality is undefined")
    return float(values.sum() ** 2 / squares)


def covariance_eigenvalues(features: Any, device: Any = None) -> np.ndarray:
    """Eigenvalues (descending, float64) of the covariance (ddof = 1) of ``features`` (stimuli × features).

    Computed from whichever of XᵀX / (n − 1) and XXᵀ / (n − 1) of the centred features is smaller.
    """
    x = check_matrix(features, "features", min_rows=2, dtype=torch.float64, device=device)
    x = x - x.mean(dim=0)
    n, d = x.shape
    gram = (x @ x.T) if n <= d else (x.T @ x)
    values = torch.linalg.eigvalsh(gram / (n - 1))
    return values.flip(0).cpu().numpy()


def effective_dimensionality(features: Any, device: Any = None) -> float:
    """Participation ratio of the covariance eigenvalues of ``features`` (stimuli × features):
    tr(G)² / ‖G‖²_F of the smaller of XcᵀXc and XcXcᵀ (module docstring). Centred in float64, the product in
    float32 (the cost of the evaluation's per-point dimensionality), the sums in float64: relative error ~1e-6."""
    x = check_matrix(features, "features", min_rows=2, dtype=torch.float64, device=device)
    x = (x - x.mean(dim=0)).to(torch.float32)
    gram = ((x @ x.T) if x.shape[0] <= x.shape[1] else (x.T @ x)).to(torch.float64)
    squares = float(torch.sum(gram * gram))
    if squares == 0.0:
        raise AlignmentInputError("the features are constant: their dimensionality is undefined")
    return float(torch.trace(gram)) ** 2 / squares
