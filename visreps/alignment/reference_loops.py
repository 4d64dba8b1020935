"""The straightforward per-iteration loops (SciPy/numpy, one resample at a time).

They define what the batched bootstraps must reproduce; the tests and benchmarks compare against them, and
the RSA bootstrap uses the RSA loop as its fallback for Kendall τ-a when numba is missing. Both take the
same ``Resampling`` indices as the fast paths.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.stats
from tqdm.auto import tqdm

from visreps.alignment.compare import kendall_tau_a_vectors


def _resampled_upper(rdm: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The upper triangle of rdm[indices][:, indices] (indices sorted), without the self-pairs of duplicates."""
    sub = rdm[np.ix_(indices, indices)]
    rows, cols = np.triu_indices(indices.size, k=1)
    keep = indices[rows] != indices[cols]
    return sub[rows[keep], cols[keep]]


def _compare(a: np.ndarray, b: np.ndarray, method: str) -> float:
    if method == "spearman":
        return float(scipy.stats.spearmanr(a, b).statistic)
    if method == "pearson":
        return float(scipy.stats.pearsonr(a, b).statistic)
    return kendall_tau_a_vectors(a, b)


def _indices_from_counts(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(counts.size), counts)


def rsa_resample_scores_loop(model_rdms: Sequence[np.ndarray], neural_rdm: np.ndarray, counts: np.ndarray,
                             method: str = "spearman", progress: bool = False) -> np.ndarray:
    """Scores (n_resamples × n_models), one SciPy call per resample and model."""
    out = np.empty((counts.shape[0], len(model_rdms)))
    for it in tqdm(range(counts.shape[0]), desc=f"{method} bootstrap (loop)", disable=not progress):
        indices = _indices_from_counts(counts[it])
        neural = _resampled_upper(neural_rdm, indices)
        for index, model in enumerate(model_rdms):
            out[it, index] = _compare(_resampled_upper(model, indices), neural, method)
    return out


def encoding_resample_scores_loop(predictions: np.ndarray, responses: np.ndarray, indices: np.ndarray,
                                  progress: bool = False) -> np.ndarray:
    """Mean Pearson r over targets for each resample (rows of ``indices``), numpy per iteration."""
    out = np.empty(indices.shape[0])
    for it in tqdm(range(indices.shape[0]), desc="encoding bootstrap (loop)", disable=not progress):
        p = predictions[indices[it]].astype(np.float64)
        y = responses[indices[it]].astype(np.float64)
        p = p - p.mean(axis=0)
        y = y - y.mean(axis=0)
        out[it] = float(((p * y).sum(axis=0) / np.sqrt((p * p).sum(axis=0) * (y * y).sum(axis=0))).mean())
    return out
