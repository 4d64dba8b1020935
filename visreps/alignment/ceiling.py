"""Noise ceilings: how well a perfect (noise-free) model could score, and scores normalised by them.

Conventions (all ceilings are in the units of the score they normalise, i.e. correlations):
- Repeated measurements (stimuli × repetitions × units): the R repetitions are split at random (seeded)
  into two halves of R // 2 each (one left out when R is odd), averaged within each half, correlated across
  stimuli (per unit for encoding; as RDMs for RSA), averaged over ``n_splits`` splits and corrected to all R
  repetitions with Spearman–Brown, reliability = f·r / (1 + (f − 1)·r), f = R / (R // 2) (2 for even R).
  The ceiling is sqrt(max(reliability, 0)): by classical test theory a noise-free model correlates at most
  sqrt(reliability) with the trial average. The encoding ceiling is the mean of the per-unit ceilings.
- NSD: ncsnr per voxel gives the percentage of explainable variance for n averaged trials,
  NC = 100 · ncsnr² / (ncsnr² + 1/n); ``ceiling_r_from_percent`` turns it into a correlation, sqrt(NC/100).
- RSA across subjects (Nili et al. 2014, as rsatoolbox's ``boot_noise_ceiling``): each subject's RDM
  compared with the pooled RDM of all subjects (upper bound) and of the other subjects (lower bound),
  averaged over subjects. Pooling averages rank-transformed upper triangles for Spearman and Kendall and
  z-scored ones for Pearson (what each comparison is invariant to, as rsatoolbox's ``pool_rdm``);
  ``pool="mean"`` averages the raw RDMs instead.
Normalised score = score / ceiling (an error, not inf, when the ceiling is not positive).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from visreps.alignment.bootstrap import pearson_columns
from visreps.alignment.compare import check_compare_method, compare_vectors, rank_average, upper_triangle
from visreps.alignment.rdm import rdm_pearson
from visreps.alignment.validation import MIN_STIMULI, AlignmentInputError, as_tensor, check_finite, check_rdm

DEFAULT_SPLITS = 20


@dataclass
class NoiseCeiling:
    """A ceiling (score units), the reliability it came from, and per-unit values where they exist."""

    ceiling: float
    reliability: float
    method: str
    per_unit_ceiling: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"noise_ceiling": self.ceiling, "reliability": self.reliability, "ceiling_method": self.method,
                **self.extras}


def spearman_brown(r: Any, factor: float = 2.0) -> Any:
    """Reliability of a measure ``factor`` times longer: factor·r / (1 + (factor − 1)·r)."""
    return factor * np.asarray(r) / (1.0 + (factor - 1.0) * np.asarray(r))


def ncsnr_noise_ceiling(ncsnr: Any, n_trials: int) -> np.ndarray:
    """NSD noise ceiling in percent explainable variance for ``n_trials`` averaged trials."""
    snr = np.asarray(ncsnr, dtype=np.float64)
    if n_trials < 1:
        raise AlignmentInputError(f"n_trials must be ≥ 1, got {n_trials}")
    if not np.isfinite(snr).all() or (snr < 0).any():
        raise AlignmentInputError("ncsnr must be finite and non-negative")
    return 100.0 * snr**2 / (snr**2 + 1.0 / n_trials)


def ceiling_r_from_percent(percent: Any) -> np.ndarray:
    """Correlation ceiling sqrt(NC / 100) from a percent-explainable-variance ceiling."""
    return np.sqrt(np.clip(np.asarray(percent, dtype=np.float64), 0.0, 100.0) / 100.0)


def _check_repetitions(repetitions: Any, name: str = "repetitions") -> torch.Tensor:
    data = as_tensor(repetitions, name, dtype=torch.float64)
    if data.ndim != 3:
        raise AlignmentInputError(
            f"{name} must be stimuli × repetitions × units, got shape {tuple(data.shape)}"
        )
    if data.shape[0] < MIN_STIMULI or data.shape[1] < 2:
        raise AlignmentInputError(
            f"{name} needs ≥ {MIN_STIMULI} stimuli and ≥ 2 repetitions, got shape {tuple(data.shape)}"
        )
    check_finite(data, name)
    return data


def _half_means(data: torch.Tensor, n_splits: int, seed: int):
    """Yield (mean of half A, mean of half B), stimuli × units, for ``n_splits`` seeded splits."""
    rng = np.random.default_rng(seed)
    half = data.shape[1] // 2
    for _ in range(n_splits):
        order = torch.from_numpy(rng.permutation(data.shape[1]))
        yield data[:, order[:half]].mean(dim=1), data[:, order[half:2 * half]].mean(dim=1)


def split_half_reliability(repetitions: Any, *, n_splits: int = DEFAULT_SPLITS, seed: int = 0) -> np.ndarray:
    """Per-unit Spearman–Brown-corrected split-half reliability (units,) across stimuli."""
    data = _check_repetitions(repetitions)
    total = torch.zeros(data.shape[2], dtype=torch.float64)
    for first, second in _half_means(data, n_splits, seed):
        r = pearson_columns(first, second)
        if not bool(torch.isfinite(r).all()):
            bad = torch.nonzero(~torch.isfinite(r)).flatten()[:10].tolist()
            raise AlignmentInputError(
                f"repetitions: units {bad} are constant over stimuli in a half of the repetitions; drop them"
            )
        total += r
    return spearman_brown((total / n_splits).numpy(), data.shape[1] / (data.shape[1] // 2))


def encoding_noise_ceiling(repetitions: Any, *, n_splits: int = DEFAULT_SPLITS, seed: int = 0) -> NoiseCeiling:
    """Ceiling of the mean per-unit Pearson r of an encoding model (see module docstring)."""
    reliability = split_half_reliability(repetitions, n_splits=n_splits, seed=seed)
    per_unit = np.sqrt(np.clip(reliability, 0.0, None))
    return NoiseCeiling(float(per_unit.mean()), float(reliability.mean()), "split-half, Spearman-Brown",
                        per_unit_ceiling=per_unit)


def rsa_split_half_ceiling(repetitions: Any, *, method: str = "spearman", n_splits: int = DEFAULT_SPLITS,
                           seed: int = 0) -> NoiseCeiling:
    """Ceiling of an RSA score from the split-half reliability of the neural RDM (1 − Pearson RDMs)."""
    method = check_compare_method(method)
    data = _check_repetitions(repetitions)
    correlations = []
    for first, second in _half_means(data, n_splits, seed):
        correlations.append(compare_vectors(upper_triangle(rdm_pearson(first, on_constant="error", name="half A")),
                                            upper_triangle(rdm_pearson(second, on_constant="error",
                                                                       name="half B")), method))
    factor = data.shape[1] / (data.shape[1] // 2)
    reliability = float(spearman_brown(float(np.mean(correlations)), factor))
    return NoiseCeiling(float(np.sqrt(max(reliability, 0.0))), reliability, f"split-half RDM {method}, Spearman-Brown",
                        extras={"split_half_r": float(np.mean(correlations))})


def _pool(vectors: torch.Tensor, pool: str) -> torch.Tensor:
    if pool == "rank":
        vectors = rank_average(vectors)
    elif pool == "zscore":
        vectors = vectors - vectors.mean(dim=1, keepdim=True)
        vectors = vectors / vectors.square().mean(dim=1, keepdim=True).sqrt()
    return vectors.mean(dim=0)


def rsa_subject_ceiling(subject_rdms: Sequence[Any], *, method: str = "spearman", pool: str | None = None
                        ) -> tuple[float, float]:
    """(lower, upper) RSA noise-ceiling bounds from ≥ 2 subjects' RDMs of the same stimuli."""
    method = check_compare_method(method)
    pool = pool or ("zscore" if method == "pearson" else "rank")
    if pool not in ("rank", "zscore", "mean"):
        raise AlignmentInputError(f"pool must be 'rank', 'zscore' or 'mean', got {pool!r}")
    if len(subject_rdms) < 2:
        raise AlignmentInputError(f"a between-subject ceiling needs ≥ 2 subjects' RDMs, got {len(subject_rdms)}")
    rdms = [check_rdm(rdm, f"RDM of subject {i}") for i, rdm in enumerate(subject_rdms)]
    if len({tuple(r.shape) for r in rdms}) != 1:
        raise AlignmentInputError(f"subject RDMs differ in shape: {[tuple(r.shape) for r in rdms]}")
    vectors = torch.stack([upper_triangle(r) for r in rdms])
    everyone = _pool(vectors, pool)
    upper, lower = [], []
    for index in range(len(rdms)):
        others = torch.cat([vectors[:index], vectors[index + 1:]])
        upper.append(compare_vectors(vectors[index], everyone, method))
        lower.append(compare_vectors(vectors[index], _pool(others, pool), method))
    return float(np.mean(lower)), float(np.mean(upper))


def normalise_score(score: float, ceiling: float) -> float:
    """score / ceiling; raises when the ceiling is not positive (unreliable data cannot be normalised)."""
    if not np.isfinite(ceiling) or ceiling <= 0:
        raise AlignmentInputError(
            f"noise ceiling is {ceiling}: the measurements are not reliable enough to normalise a score"
        )
    return float(score / ceiling)
