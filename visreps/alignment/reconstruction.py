"""The PCA-reconstruction control: RDMs of activations rebuilt from their top M principal components.

A coarse-label network might align like a fine one only because it keeps the fine network's few dominant
dimensions. Scoring the fine network's activations reconstructed from M = 1..15 components (SPEC §7) shows how
alignment grows with rank; a coarse model below the M = 8 curve is not merely a low-rank fine model.

X (n stimuli × D features) has column means μ and centred rows Xc = X − μ. With U_M the top-M eigenvectors of
the Gram matrix G = Xc Xcᵀ (the left singular vectors), the reconstruction is X̂ = μ + U_M U_Mᵀ Xc. Its
Pearson RDM needs only n × n and n-sized sums over the D columns (G, Xc μ, Xc 1, μ·μ, Σμ), accumulated over
column chunks, so a 290,400-wide layer is never rebuilt. M ≥ min(n − 1, D) keeps every component: that RDM is
``rdm_pearson(X)`` itself (the same numbers, so a full-rank control reproduces the unreconstructed score).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from visreps.alignment.rdm import rdm_pearson
from visreps.alignment.validation import AlignmentInputError, block_to_tensor, check_finite, resolve_device

#: feature columns read at once
CHUNK_COLUMNS = 8192


def _moments(features: Any, device: torch.device, chunk_columns: int) -> tuple[torch.Tensor, ...]:
    n, d = (int(v) for v in features.shape)
    gram = torch.zeros(n, n, dtype=torch.float64, device=device)
    centred_mean = torch.zeros(n, dtype=torch.float64, device=device)  # Xc μ
    centred_sum = torch.zeros(n, dtype=torch.float64, device=device)  # Xc 1
    mean_square, mean_sum = torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, d, chunk_columns):
        chunk = block_to_tensor(features[:, start:start + chunk_columns]).to(device=device, dtype=torch.float64)
        check_finite(chunk, "features")
        mu = chunk.mean(dim=0)
        centred = chunk - mu
        gram += centred @ centred.T
        centred_mean += centred @ mu
        centred_sum += centred.sum(dim=1)
        mean_square += mu @ mu
        mean_sum += mu.sum()
    return gram, centred_mean, centred_sum, mean_square, mean_sum


def pca_reconstruction_rdms(features: Any, components: Sequence[int], *, device: str | torch.device | None = None,
                            chunk_columns: int = CHUNK_COLUMNS) -> dict[int, torch.Tensor]:
    """M -> Pearson RDM (n × n, float64, zero diagonal) of ``features`` (n × D) rebuilt from its top M PCs.

    M ≥ min(n − 1, D) keeps every component: the features' own ``rdm_pearson`` RDM.
    """
    shape = tuple(getattr(features, "shape", np.shape(features)))
    if len(shape) != 2 or shape[0] < 3 or shape[1] < 1:
        raise AlignmentInputError(f"features must be stimuli × features with ≥ 3 stimuli, got shape {shape}")
    ms = [int(m) for m in components]
    if not ms or min(ms) < 1:
        raise AlignmentInputError(f"components must be positive numbers of components, got {list(components)}")
    device = resolve_device(device, features)
    gram, centred_mean, centred_sum, mean_square, mean_sum = _moments(features, device, chunk_columns)
    values, vectors = torch.linalg.eigh(gram)
    values, vectors = values.flip(0).clamp_min(0.0), vectors.flip(1)
    n, d = shape
    out = {}
    for m in ms:
        if m >= min(n - 1, d):
            out[m] = rdm_pearson(features, device=device).to(torch.float64)
            continue
        u = vectors[:, :m]
        projected_gram = (u * values[:m]) @ u.T  # (P Xc)(P Xc)ᵀ
        a, b = u @ (u.T @ centred_mean), u @ (u.T @ centred_sum)  # P Xc μ, P Xc 1
        inner = mean_square + a[:, None] + a[None, :] + projected_gram
        row_mean = (mean_sum + b) / d
        covariance = inner / d - row_mean[:, None] * row_mean[None, :]
        variance = covariance.diagonal().clone()
        if (variance <= 1e-12 * variance.abs().max().clamp_min(1e-300)).any():
            raise AlignmentInputError(f"the {m}-component reconstruction has constant rows; its RDM is undefined")
        correlation = covariance / torch.sqrt(variance[:, None] * variance[None, :])
        rdm = (1.0 - correlation).clamp(0.0, 2.0)
        rdm.fill_diagonal_(0.0)
        out[m] = (rdm + rdm.T) / 2.0
    return out
