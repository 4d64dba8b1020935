"""Sparse random projection: determinism, distribution (vs scikit-learn), product, bad input."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from sklearn.random_projection import SparseRandomProjection

from visreps.alignment import AlignmentInputError, project_features, sparse_random_projection
from visreps.alignment import _projection_kernel
from visreps.alignment import projection as projection_module


def fingerprint(matrix: torch.Tensor) -> str:
    signs = (matrix.values().numpy() > 0).astype(np.int64)
    parts = [matrix.crow_indices().numpy(), matrix.col_indices().numpy(), signs]
    return hashlib.sha256(np.concatenate(parts).tobytes()).hexdigest()


def test_identity_when_input_is_not_wider():
    projection = sparse_random_projection(100, 4096)
    assert projection.is_identity and projection.output_dim == 100
    x = np.random.default_rng(0).standard_normal((5, 100))
    np.testing.assert_allclose(projection.project(x).numpy(), x.astype(np.float32))


def test_same_seed_same_matrix_on_any_machine():
    """Pinned fingerprint: generation uses integer-only PCG64 output, so it must never change."""
    matrix = sparse_random_projection(5000, 64, seed=123).matrix
    assert matrix.values().numel() == 4508
    assert fingerprint(matrix) == "e90fdef0c842227ede48e398b774881d0025ec0c6bd7c77f0b39aaf1b786d012"
    assert fingerprint(sparse_random_projection(5000, 64, seed=124).matrix) != fingerprint(matrix)
    assert sparse_random_projection(5000, 64, seed=123).density == pytest.approx(1 / np.sqrt(5000))


def test_generation_chunk_does_not_change_the_matrix(monkeypatch):
    reference = fingerprint(sparse_random_projection(3001, 50, seed=9).matrix)
    monkeypatch.setattr(projection_module, "GENERATION_CHUNK", 7)
    assert fingerprint(sparse_random_projection(3001, 50, seed=9).matrix) == reference


def test_entries_follow_the_sklearn_distribution():
    d, k = 20000, 256
    ours = sparse_random_projection(d, k, seed=0).matrix.to_dense().numpy()  # k × d
    theirs = SparseRandomProjection(k, random_state=0).fit(np.zeros((2, d))).components_.toarray()
    density = 1 / np.sqrt(d)
    value = np.sqrt(1 / (density * k))
    for matrix in (ours, theirs):
        np.testing.assert_allclose(np.unique(np.abs(matrix)), [0.0, value], rtol=1e-6)
        nonzero = (matrix != 0).mean()
        assert abs(nonzero - density) < 5 * np.sqrt(density / matrix.size)
        assert abs((matrix > 0).sum() / (matrix != 0).sum() - 0.5) < 0.02
    per_component = (ours != 0).sum(axis=1)
    assert abs(per_component.mean() - d * density) < 4 * np.sqrt(d * density / k)
    assert abs(per_component.var() / (d * density) - 1) < 0.3  # binomial spread, like sklearn's rows


def test_projection_is_the_sparse_product_and_preserves_norms():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 6000)).astype(np.float32)
    projection = sparse_random_projection(6000, 1024, seed=4)
    expected = x @ projection.matrix.to_dense().numpy().T
    got = projection.project(x, batch_rows=16).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    ratio = np.linalg.norm(got, axis=1) / np.linalg.norm(x, axis=1)
    assert abs(ratio.mean() - 1) < 0.05
    np.testing.assert_allclose(project_features(x, 1024, seed=4).numpy(), got, atol=1e-6)
    assert projection.describe()["projection_nonzeros"] == projection.matrix.values().numel()


@pytest.mark.parametrize("kernel", ["numba", "scipy", "torch"])
def test_cpu_kernels_agree_with_the_dense_product(monkeypatch, kernel):
    if kernel == "numba" and not _projection_kernel.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    x = np.random.default_rng(2).standard_normal((37, 3000)).astype(np.float32)
    x[x < 0.3] = 0.0  # ReLU-like zeros are skipped by the numba kernel
    projection = sparse_random_projection(3000, 256, seed=5)
    expected = x @ projection.matrix.to_dense().numpy().T
    monkeypatch.setattr(projection_module, "CPU_KERNEL", kernel)
    torch.set_num_threads(2)  # two worker threads for scipy (restored by the conftest fixture)
    for data in (x, torch.from_numpy(x)):
        np.testing.assert_allclose(projection.project(data, batch_rows=5).numpy(), expected, rtol=1e-5, atol=1e-4)
    bad = x.copy()
    bad[21, 7] = np.inf
    with pytest.raises(AlignmentInputError, match="non-finite.*stimuli 20..24"):
        projection.project(bad, batch_rows=5)
