"""RDM comparisons against SciPy, rsatoolbox and brute force, including ties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats
import torch
from rsatoolbox.rdm import RDMs
from rsatoolbox.rdm.compare import compare as rsatoolbox_compare
from scipy.spatial.distance import squareform

from visreps.alignment import (
    AlignmentInputError,
    compare_rdms,
    compare_vectors,
    kendall_tau_a_upper,
    kendall_tau_a_vectors,
    pearson_upper,
    rank_average,
    spearman_upper,
    upper_triangle,
)


def random_rdm(n: int, seed: int, decimals: int | None = None) -> np.ndarray:
    values = np.random.default_rng(seed).random(n * (n - 1) // 2)
    if decimals is not None:
        values = np.round(values, decimals)
    return squareform(values)


def brute_force_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    total = 0.0
    for i, j in itertools.combinations(range(x.size), 2):
        total += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    return total / (x.size * (x.size - 1) / 2)


def test_upper_triangle_is_squareform_order():
    rdm = random_rdm(7, 0)
    np.testing.assert_array_equal(upper_triangle(torch.from_numpy(rdm)).numpy(), squareform(rdm))


@pytest.mark.parametrize("decimals", [None, 1])
def test_rank_average_equals_scipy_rankdata(decimals):
    values = np.random.default_rng(3).random((4, 200))
    if decimals:
        values = np.round(values, decimals)
    ranks = rank_average(torch.from_numpy(values)).numpy()
    np.testing.assert_array_equal(ranks, scipy.stats.rankdata(values, axis=1))


@pytest.mark.parametrize("decimals", [None, 1])
def test_spearman_and_pearson_equal_scipy(decimals):
    a, b = random_rdm(30, 1, decimals), random_rdm(30, 2, decimals)
    a = a + 0.3 * b
    assert spearman_upper(a, b) == pytest.approx(scipy.stats.spearmanr(squareform(a), squareform(b)).statistic,
                                                 abs=1e-12)
    assert pearson_upper(a, b) == pytest.approx(scipy.stats.pearsonr(squareform(a), squareform(b)).statistic,
                                                abs=1e-12)


@pytest.mark.parametrize("decimals", [None, 1])
def test_kendall_tau_a_equals_brute_force_and_rsatoolbox(decimals):
    a, b = random_rdm(12, 4, decimals), random_rdm(12, 5, decimals)
    a = a + 0.5 * b
    expected = brute_force_tau_a(squareform(a), squareform(b))
    assert kendall_tau_a_upper(a, b) == pytest.approx(expected, abs=1e-12)
    reference = rsatoolbox_compare(RDMs(squareform(a)[None]), RDMs(squareform(b)[None]), "tau-a")[0, 0]
    assert kendall_tau_a_upper(a, b) == pytest.approx(reference, abs=1e-12)


def test_hand_computed_values():
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 2.0])
    # pairs: (12)+ (13)+ (14)+ (23)- (24)- (34)0 -> (3 - 2) / 6
    assert kendall_tau_a_vectors(x, y) == pytest.approx(1 / 6)
    # tau-a, not SciPy's default tau-b (which divides by sqrt(6 * 5) because y has one tied pair)
    assert scipy.stats.kendalltau(x, y).statistic == pytest.approx(1 / np.sqrt(30))
    assert compare_vectors(x, y, "spearman") == pytest.approx(np.corrcoef([1, 2, 3, 4], [1, 4, 2.5, 2.5])[0, 1])
    assert compare_vectors(x, 2 * x + 1, "pearson") == pytest.approx(1.0)


def test_compare_rdms_dispatch_and_errors():
    a, b = random_rdm(8, 6), random_rdm(8, 7)
    assert compare_rdms(a, b) == spearman_upper(a, b)
    assert compare_rdms(a, b, "kendall") == kendall_tau_a_upper(a, b)
    with pytest.raises(AlignmentInputError, match="unknown RDM comparison"):
        compare_rdms(a, b, "cosine")
    with pytest.raises(AlignmentInputError, match="different stimuli"):
        compare_rdms(a, random_rdm(9, 0))
    with pytest.raises(AlignmentInputError, match="constant"):
        compare_rdms(a, np.ones((8, 8)))
    nan_rdm = a.copy()
    nan_rdm[0, 3] = np.nan
    with pytest.raises(AlignmentInputError, match="non-finite"):
        compare_rdms(nan_rdm, b)
    with pytest.raises(AlignmentInputError, match="at least 3"):
        compare_rdms(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(AlignmentInputError, match="square"):
        compare_rdms(np.zeros((3, 4)), np.zeros((3, 4)))
