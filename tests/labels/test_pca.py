"""Streaming PCA against numpy on the full matrix; sign rule; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles

from visreps.labels import (
    CovarianceAccumulator,
    LabelError,
    array_batches,
    fix_signs,
    pca_from_accumulator,
    streaming_pca,
)


def low_rank_data(n: int, d: int, seed: int, offset: float = 0.0) -> np.ndarray:
    """Rows with a clearly decaying spectrum (distinct eigenvalues) plus a constant offset."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = 3.0 * 0.7 ** np.arange(d)
    return rng.standard_normal((n, d)) * scales @ basis.T + offset


def numpy_pca(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference: np.cov + np.linalg.eigh on the full matrix, descending, same sign rule."""
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    order = np.argsort(values)[::-1]
    return x.mean(axis=0), values[order], fix_signs(vectors[:, order[:n]].T)


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_accumulated_pca_equals_numpy_eigh(batch_size: int) -> None:
    x = low_rank_data(300, 12, seed=1, offset=50.0)  # large mean: the shifted sums must not lose digits
    accumulator = CovarianceAccumulator(12)
    for start in range(0, len(x), batch_size):
        accumulator.update(x[start : start + batch_size])
    mean, values, components = numpy_pca(x, 5)
    pca = pca_from_accumulator(accumulator, 5)
    np.testing.assert_allclose(accumulator.covariance().numpy(), np.cov(x, rowvar=False), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(pca.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(pca.eigenvalues, values, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pca.components, components, atol=1e-9)
    np.testing.assert_allclose(pca.explained_variance_ratio, values / values.sum(), rtol=1e-9, atol=1e-13)
    assert pca.n_samples == 300


def test_streaming_pca_fits_only_fit_rows_and_projects_all() -> None:
    x = low_rank_data(200, 10, seed=2)
    fit = np.random.default_rng(3).random(200) < 0.8
    result = streaming_pca(array_batches(x, 33), 200, fit, 4)
    normalised = x / np.linalg.norm(x, axis=1, keepdims=True)
    mean, values, components = numpy_pca(normalised[fit], 4)
    assert np.max(subspace_angles(result.pca.components.T, components.T)) < 1e-8
    np.testing.assert_allclose(result.pca.components, components, atol=1e-8)
    np.testing.assert_allclose(result.projections, (normalised - mean) @ components.T, atol=1e-10)
    assert result.seen.all() and result.feature_dim == 10


def test_float16_feature_cache_gives_nearly_the_same_projections(tmp_path) -> None:
    x = low_rank_data(150, 16, seed=4)
    fit = np.ones(150, dtype=bool)
    exact = streaming_pca(array_batches(x, 20), 150, fit, 3)
    cached = streaming_pca(array_batches(x, 20), 150, fit, 3, cache_file=tmp_path / "f.f16")
    np.testing.assert_array_equal(cached.pca.components, exact.pca.components)
    np.testing.assert_allclose(cached.projections, exact.projections, atol=2e-3)
    assert (tmp_path / "f.f16").stat().st_size == 150 * 16 * 2


def test_sign_rule_makes_largest_entry_positive_and_ignores_input_sign() -> None:
    rows = np.array([[0.1, -0.9, 0.3], [0.5, 0.5, -0.5], [-0.2, 0.0, 0.1]])
    fixed = fix_signs(rows)
    np.testing.assert_array_equal(fixed, [[-0.1, 0.9, -0.3], [0.5, 0.5, -0.5], [0.2, 0.0, -0.1]])
    np.testing.assert_array_equal(fix_signs(-rows), fixed)


def test_pca_is_deterministic_across_batch_sizes_and_runs() -> None:
    x = low_rank_data(120, 8, seed=5)
    fit = np.ones(120, dtype=bool)
    a = streaming_pca(array_batches(x, 10), 120, fit, 3)
    b = streaming_pca(array_batches(x, 120), 120, fit, 3)
    np.testing.assert_allclose(a.pca.components, b.pca.components, atol=1e-12)
    np.testing.assert_allclose(a.projections, b.projections, atol=1e-12)


def test_more_pcs_than_dimensions_or_fit_rows_is_refused() -> None:
    x = low_rank_data(10, 4, seed=6)
    with pytest.raises(LabelError, match="more principal components than the 4 feature dimensions"):
        streaming_pca(array_batches(x), 10, np.ones(10, dtype=bool), 5)
    with pytest.raises(LabelError, match="needs at least 5 fit images, but there are 4"):
        streaming_pca(array_batches(x), 10, np.arange(10) < 4, 4)


def test_accumulator_rejects_bad_batches() -> None:
    accumulator = CovarianceAccumulator(3)
    with pytest.raises(LabelError, match=r"expected \(batch, 3\)"):
        accumulator.update(np.zeros((2, 4)))
    with pytest.raises(LabelError, match="NaN or inf"):
        accumulator.update(np.array([[1.0, np.nan, 0.0]]))
    accumulator.update(torch.ones(5, 3))
    with pytest.raises(LabelError, match="zero variance"):
        pca_from_accumulator(accumulator, 1)
