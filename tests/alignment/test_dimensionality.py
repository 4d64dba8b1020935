"""Effective dimensionality (participation ratio) against numpy's covariance eigenvalues and hand cases."""

from __future__ import annotations

import numpy as np
import pytest

from visreps.alignment.dimensionality import covariance_eigenvalues, effective_dimensionality, participation_ratio
from visreps.alignment.validation import AlignmentInputError


def test_participation_ratio_hand_cases() -> None:
    assert participation_ratio([1.0, 0.0, 0.0]) == 1.0
    assert participation_ratio([2.0, 2.0, 2.0, 2.0]) == pytest.approx(4.0)
    assert participation_ratio([3.0, 1.0]) == pytest.approx(16.0 / 10.0)


@pytest.mark.parametrize("shape", [(40, 7), (12, 300)])  # more stimuli than features, and fewer
def test_eigenvalues_and_ratio_equal_numpy(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape) * rng.uniform(0.1, 3.0, shape[1]) + rng.uniform(-2, 2, shape[1])
    reference = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    ours = covariance_eigenvalues(x.astype(np.float32))
    rank = min(shape[0] - 1, shape[1])
    np.testing.assert_allclose(ours[:rank], reference[:rank], rtol=1e-5, atol=1e-6 * reference[0])
    positive = np.clip(reference, 0, None)
    expected = positive.sum() ** 2 / np.square(positive).sum()
    assert effective_dimensionality(x) == pytest.approx(expected, rel=1e-5)


def test_bad_input_is_named() -> None:
    with pytest.raises(AlignmentInputError, match="constant"):
        effective_dimensionality(np.ones((5, 3)))
    with pytest.raises(AlignmentInputError, match="non-negative"):
        participation_ratio([1.0, -0.5])
    with pytest.raises(AlignmentInputError, match="non-empty"):
        participation_ratio([])
