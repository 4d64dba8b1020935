"""Rank intervals against a straightforward loop over the resamples with scipy.stats.rankdata."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from visreps.alignment.ranking import rank_intervals
from visreps.alignment.validation import AlignmentInputError


def test_ranks_and_intervals_equal_a_loop() -> None:
    rng = np.random.default_rng(0)
    means = np.array([0.30, 0.31, 0.10, 0.50])
    draws = means[:, None] + 0.02 * rng.standard_normal((4, 500))
    result = rank_intervals(means, draws, ci_level=0.9)
    np.testing.assert_array_equal(result.rank, [3, 2, 4, 1])
    loop = np.empty_like(draws)
    for i in range(draws.shape[1]):
        loop[:, i] = len(means) + 1 - scipy.stats.rankdata(draws[:, i])  # descending, no ties here
    np.testing.assert_array_equal(result.resampled_ranks, loop)
    np.testing.assert_allclose(result.ci_low, np.percentile(loop, 5, axis=1))
    np.testing.assert_allclose(result.ci_high, np.percentile(loop, 95, axis=1))
    assert (result.ci_low[[2, 3]] == result.ci_high[[2, 3]]).all()  # clearly separated: a certain rank
    assert result.ci_low[0] == 2 and result.ci_high[0] == 3  # near-tie of conditions 0 and 1: rank 2 or 3


def test_ties_share_the_mean_rank_and_bad_shapes_are_named() -> None:
    result = rank_intervals([1.0, 1.0, 0.0], [[1, 2], [1, 2], [0, 0]])
    np.testing.assert_array_equal(result.rank, [1.5, 1.5, 3])
    with pytest.raises(AlignmentInputError, match="conditions × resamples"):
        rank_intervals([1.0, 0.0], np.zeros((3, 10)))
    with pytest.raises(AlignmentInputError, match="at least 2 conditions"):
        rank_intervals([1.0], np.zeros((1, 10)))
