"""RDMs against scipy.spatial.distance, chunking, constant rows, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import calc_rdm
from scipy.spatial.distance import pdist, squareform

from visreps.alignment import (
    AlignmentInputError,
    ConstantRowsWarning,
    compute_rdm,
    constant_rows,
    rdm_cosine,
    rdm_euclidean,
    rdm_pearson,
)


@pytest.fixture()
def activations() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((17, 53)) * rng.uniform(0.5, 3, size=(17, 1)) + rng.uniform(-2, 2, size=(17, 1))


@pytest.mark.parametrize("chunk", [None, 1, 7, 53])
def test_pearson_rdm_equals_scipy_correlation_distance(activations, chunk):
    rdm = rdm_pearson(activations, chunk_columns=chunk)
    assert rdm.dtype == torch.float64
    np.testing.assert_allclose(rdm.numpy(), squareform(pdist(activations, "correlation")), atol=1e-12)
    assert torch.all(rdm.diagonal() == 0)


def test_pearson_rdm_equals_rsatoolbox_correlation_rdm(activations):
    reference = calc_rdm(Dataset(activations), method="correlation").get_matrices()[0]
    np.testing.assert_allclose(rdm_pearson(activations, chunk_columns=11).numpy(), reference, atol=1e-12)


@pytest.mark.parametrize("chunk", [None, 5])
def test_cosine_and_euclidean_equal_scipy(activations, chunk):
    np.testing.assert_allclose(rdm_cosine(activations, chunk_columns=chunk).numpy(),
                               squareform(pdist(activations, "cosine")), atol=1e-12)
    np.testing.assert_allclose(rdm_euclidean(activations, chunk_columns=chunk).numpy(),
                               squareform(pdist(activations, "euclidean")), atol=1e-10)
    np.testing.assert_allclose(compute_rdm(activations, "euclidean").numpy(),
                               squareform(pdist(activations, "euclidean")), atol=1e-10)


def test_float32_input_memmap_and_torch(tmp_path, activations):
    path = tmp_path / "x.npy"
    np.save(path, activations.astype(np.float32))
    mapped = np.load(path, mmap_mode="r")
    expected = squareform(pdist(activations.astype(np.float32).astype(np.float64), "correlation"))
    np.testing.assert_allclose(rdm_pearson(mapped, chunk_columns=10).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(rdm_pearson(torch.from_numpy(activations)).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(rdm_pearson(mapped, precision=torch.float64).numpy(), expected, atol=1e-12)


def test_large_row_offsets_stay_accurate():
    """Per-chunk centring: a mean 1e6 times the spread must not cancel away the correlations."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 40)) + 1e6
    np.testing.assert_allclose(rdm_pearson(x, chunk_columns=9).numpy(), squareform(pdist(x, "correlation")),
                               atol=1e-8)


def test_hand_computed_rdm():
    x = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.5]])
    rdm = rdm_pearson(x).numpy()
    assert rdm[0, 1] == pytest.approx(2.0)
    r = np.corrcoef(x[0], x[2])[0, 1]
    assert rdm[0, 2] == pytest.approx(1 - r)


def test_constant_rows_are_reported_and_handled(activations):
    x = activations.copy()
    x[3] = 4.2
    x[8] = 0.0
    assert constant_rows(x).tolist() == [3, 8]
    with pytest.warns(ConstantRowsWarning, match=r"rows 3, 8"):
        rdm = rdm_pearson(x)
    assert torch.isfinite(rdm).all()
    assert rdm[3, 0] == 1.0 and rdm[0, 8] == 1.0 and rdm[3, 3] == 0.0 and rdm[3, 8] == 1.0
    others = [i for i in range(17) if i not in (3, 8)]
    expected = squareform(pdist(x[others], "correlation"))
    np.testing.assert_allclose(rdm.numpy()[np.ix_(others, others)], expected, atol=1e-12)
    with pytest.raises(AlignmentInputError, match="zero-variance"):
        rdm_pearson(x, on_constant="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rdm_pearson(x, on_constant="ignore")
    with pytest.warns(ConstantRowsWarning, match="all-zero"):
        rdm_cosine(x)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_activations_raise_naming_columns(activations, bad):
    x = activations.copy()
    x[2, 30] = bad
    with pytest.raises(AlignmentInputError, match=r"non-finite.*columns 28\.\.34"):
        rdm_pearson(x, chunk_columns=7, name="layer conv1")


def test_shape_errors():
    with pytest.raises(AlignmentInputError, match="at least 3"):
        rdm_pearson(np.ones((2, 5)))
    with pytest.raises(AlignmentInputError, match="2-D"):
        rdm_pearson(np.ones(5))
    with pytest.raises(AlignmentInputError, match="unknown RDM metric"):
        compute_rdm(np.ones((4, 4)), "manhattan")
