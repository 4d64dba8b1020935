"""Median-split labels: a hand computation, bit order, nesting, balance, fit-only medians, determinism, bad K."""

from __future__ import annotations

import numpy as np
import pytest

from visreps.labels import (
    LabelError,
    array_batches,
    binary_codes,
    check_ks,
    check_nesting,
    class_sizes,
    coarse_labels,
    median_thresholds,
    streaming_pca,
)

#: 8 hand-made feature vectors (D = 4)
FEATURES = np.array([
    [3.0, 1.0, 0.0, 0.5],
    [2.5, -1.0, 0.2, 0.0],
    [-3.0, 0.8, 0.1, 0.3],
    [-2.0, -1.2, 0.0, 0.1],
    [1.0, 2.0, -0.5, 0.0],
    [-1.0, -2.0, 0.4, 0.2],
    [0.5, 0.1, 1.5, -0.4],
    [-0.4, 0.3, -1.4, 0.6],
])


def hand_labels(features: np.ndarray, n_bits: int) -> np.ndarray:
    """numpy only: L2-normalise, centre, eigh, largest-|entry|-positive signs, project, median, pack PC1 first."""
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    centred = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / (len(x) - 1))
    labels = np.zeros(len(x), dtype=np.int64)
    for j in range(n_bits):
        vector = vectors[:, np.argsort(values)[::-1][j]]
        vector = vector * np.sign(vector[np.argmax(np.abs(vector))])
        projection = centred @ vector
        bit = (projection > np.median(projection)).astype(np.int64)
        labels = labels * 2 + bit
    return labels


def library_labels(features: np.ndarray, ks, fit=None, batch_size: int = 3) -> dict[int, np.ndarray]:
    fit = np.ones(len(features), dtype=bool) if fit is None else fit
    n_bits = max(ks).bit_length() - 1
    result = streaming_pca(array_batches(features, batch_size), len(features), fit, n_bits)
    return coarse_labels(result.projections, median_thresholds(result.projections, fit), ks)


def test_labels_of_eight_vectors_equal_hand_computation() -> None:
    labels = library_labels(FEATURES, [2, 4, 8])
    for k, n_bits in ((2, 1), (4, 2), (8, 3)):
        np.testing.assert_array_equal(labels[k], hand_labels(FEATURES, n_bits))
    # medians split 8 images 4/4 on every PC
    assert class_sizes(labels[2], 2).tolist() == [4, 4]


def test_pc1_is_the_most_significant_bit() -> None:
    projections = np.array([[1.0, -1.0, 5.0], [-1.0, 1.0, -5.0], [2.0, 2.0, 0.0], [-2.0, -2.0, 1.0]])
    thresholds = np.array([0.0, 0.0, 0.5])
    # bits (PC1 PC2 PC3): 101 -> 5, 010 -> 2, 110 -> 6, 001 -> 1
    assert binary_codes(projections, thresholds, 3).tolist() == [5, 2, 6, 1]
    assert binary_codes(projections, thresholds, 1).tolist() == [1, 0, 1, 0]
    assert coarse_labels(projections, thresholds, [2, 4, 8])[4].tolist() == [2, 1, 3, 0]


def test_labels_nest_up_to_k1024_and_are_balanced() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 24)) * (0.9 ** np.arange(24))
    ks = [2 ** n for n in range(1, 11)]
    labels = library_labels(x, ks, batch_size=500)
    for small, large in zip(ks, ks[1:]):
        np.testing.assert_array_equal(labels[small], labels[large] >> 1)
    assert all(check_nesting(labels).values())
    assert class_sizes(labels[2], 2).tolist() == [2048, 2048]
    sizes4 = class_sizes(labels[4], 4)
    assert sizes4.min() > 0.8 * 1024 and sizes4.max() < 1.2 * 1024
    assert labels[1024].max() < 1024 and labels[1024].min() >= 0


def test_nesting_check_detects_a_broken_hierarchy() -> None:
    labels = {2: np.array([0, 1, 1]), 4: np.array([0, 3, 1])}
    assert check_nesting(labels) == {"k2_in_k4": False}


def test_medians_come_from_fit_images_only() -> None:
    projections = np.array([[0.0], [1.0], [2.0], [3.0], [100.0], [200.0]])
    fit = np.array([True, True, True, True, False, False])
    np.testing.assert_array_equal(median_thresholds(projections, fit), [1.5])
    np.testing.assert_array_equal(median_thresholds(projections), [2.5])
    # held-out rows with extreme features change neither PCA nor thresholds of the fit rows' labels
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 6))
    fit = np.arange(60) < 48
    base = library_labels(x, [4], fit=fit)[4]
    changed = x.copy()
    changed[~fit] = rng.standard_normal((12, 6)) * 50 + 10
    np.testing.assert_array_equal(library_labels(changed, [4], fit=fit)[4][fit], base[fit])


def test_labels_are_deterministic() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 10))
    first = library_labels(x, [2, 4, 8, 16], batch_size=7)
    second = library_labels(x, [2, 4, 8, 16], batch_size=64)
    for k in first:
        np.testing.assert_array_equal(first[k], second[k])


@pytest.mark.parametrize("bad", [[6], [1], [0], [2048], [2, 3], ["4"], [True], []])
def test_k_must_be_a_power_of_two_up_to_1024(bad) -> None:
    with pytest.raises(LabelError):
        check_ks(bad)


def test_ks_are_sorted_and_unique() -> None:
    assert check_ks([8, 2, 8, 1024]) == [2, 8, 1024]


def test_class_sizes_reject_out_of_range_labels() -> None:
    with pytest.raises(LabelError, match="outside 0..3"):
        class_sizes(np.array([0, 4]), 4)
