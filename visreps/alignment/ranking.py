"""How reliable a ranking of conditions is: each condition's rank with a bootstrap interval of that rank.

The conditions must have been scored on the same resamples (same test stimuli, resampling settings and seed),
so that resample i of every condition saw the same stimuli; then the ranks of resample i are a draw of the
ranking, and the spread of a condition's rank over the resamples says whether its place is noise.
Rank 1 is the highest score; ties share the mean of the ranks they span.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats

from visreps.alignment.bootstrap import percentile_interval
from visreps.alignment.validation import AlignmentInputError


@dataclass
class RankIntervals:
    """Per condition (input order): rank of the point estimates, and the interval of its resampled ranks."""

    rank: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    ci_level: float
    resampled_ranks: np.ndarray  # (conditions, resamples)


def descending_ranks(scores: np.ndarray, axis: int = 0) -> np.ndarray:
    """Ranks along ``axis`` with 1 for the highest score; ties get their mean rank."""
    return scipy.stats.rankdata(-np.asarray(scores, dtype=np.float64), method="average", axis=axis)


def rank_intervals(estimates: Any, distributions: Any, ci_level: float = 0.95) -> RankIntervals:
    """Ranks of ``estimates`` (conditions,) and percentile intervals of the ranks of ``distributions``
    (conditions × resamples, the same resamples for every condition)."""
    point = np.asarray(estimates, dtype=np.float64)
    draws = np.asarray(distributions, dtype=np.float64)
    if point.ndim != 1 or point.size < 2:
        raise AlignmentInputError(f"estimates must be 1-D with at least 2 conditions, got shape {point.shape}")
    if draws.ndim != 2 or draws.shape[0] != point.size or draws.shape[1] < 2:
        raise AlignmentInputError(
            f"distributions must be conditions × resamples = ({point.size}, ≥ 2), got shape {draws.shape}")
    if not (np.isfinite(point).all() and np.isfinite(draws).all()):
        raise AlignmentInputError("estimates and distributions must be finite (no NaN)")
    ranks = descending_ranks(draws, axis=0)
    low, high = np.array([percentile_interval(row, ci_level) for row in ranks]).T
    return RankIntervals(descending_ranks(point), low, high, float(ci_level), ranks)
