"""Noise ceilings against hand-computed values, a direct re-computation and rsatoolbox."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from rsatoolbox.inference import boot_noise_ceiling
from rsatoolbox.rdm import RDMs
from scipy.spatial.distance import pdist, squareform

from visreps.alignment import (
    AlignmentInputError,
    ceiling_r_from_percent,
    encoding_noise_ceiling,
    ncsnr_noise_ceiling,
    normalise_score,
    rsa_split_half_ceiling,
    rsa_subject_ceiling,
    spearman_brown,
    split_half_reliability,
)


def repetitions(n_stimuli=30, n_reps=6, n_units=5, noise=1.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n_stimuli, 1, n_units))
    return signal + noise * rng.standard_normal((n_stimuli, n_reps, n_units))


def test_hand_computed_formulas():
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(0.5, 3) == pytest.approx(0.75)
    np.testing.assert_allclose(ncsnr_noise_ceiling([0.0, 1.0, 2.0], 3), [0.0, 75.0, 100 * 4 / (4 + 1 / 3)])
    np.testing.assert_allclose(ceiling_r_from_percent([25.0, 100.0, -1.0]), [0.5, 1.0, 0.0])
    assert normalise_score(0.3, 0.6) == pytest.approx(0.5)
    with pytest.raises(AlignmentInputError, match="not reliable"):
        normalise_score(0.3, 0.0)
    with pytest.raises(AlignmentInputError):
        ncsnr_noise_ceiling([np.nan], 3)


def test_split_half_reliability_equals_direct_computation():
    data = repetitions()
    got = split_half_reliability(data, n_splits=4, seed=11)
    rng = np.random.default_rng(11)
    total = np.zeros(5)
    for _ in range(4):
        order = rng.permutation(6)
        a, b = data[:, order[:3]].mean(1), data[:, order[3:6]].mean(1)
        total += [np.corrcoef(a[:, u], b[:, u])[0, 1] for u in range(5)]
    r = total / 4
    np.testing.assert_allclose(got, 2 * r / (1 + r), atol=1e-12)


def test_encoding_ceiling_tracks_noise():
    clean = encoding_noise_ceiling(repetitions(noise=0.1))
    noisy = encoding_noise_ceiling(repetitions(noise=3.0))
    assert clean.ceiling > 0.99 and 0.2 < noisy.ceiling < clean.ceiling
    assert noisy.per_unit_ceiling.shape == (5,)
    reliability = split_half_reliability(repetitions(noise=3.0))
    assert noisy.ceiling == pytest.approx(np.sqrt(np.clip(reliability, 0, None)).mean())


def test_odd_repetitions_use_equal_halves():
    data = repetitions(n_reps=5)
    rng = np.random.default_rng(0)
    order = rng.permutation(5)
    a, b = data[:, order[:2]].mean(1), data[:, order[2:4]].mean(1)
    r = np.array([np.corrcoef(a[:, u], b[:, u])[0, 1] for u in range(5)])
    np.testing.assert_allclose(split_half_reliability(data, n_splits=1), 2.5 * r / (1 + 1.5 * r), atol=1e-12)


def test_rsa_split_half_ceiling():
    data = repetitions(n_units=40, noise=2.0)
    ceiling = rsa_split_half_ceiling(data, n_splits=1, seed=0)
    order = np.random.default_rng(0).permutation(6)
    first = pdist(data[:, order[:3]].mean(1), "correlation")
    second = pdist(data[:, order[3:]].mean(1), "correlation")
    from scipy.stats import spearmanr

    r = spearmanr(first, second).statistic
    assert ceiling.extras["split_half_r"] == pytest.approx(r, abs=1e-12)
    assert ceiling.reliability == pytest.approx(2 * r / (1 + r), abs=1e-12)
    assert ceiling.ceiling == pytest.approx(np.sqrt(2 * r / (1 + r)), abs=1e-12)


@pytest.mark.parametrize("ours, theirs", [("spearman", "spearman"), ("pearson", "corr"), ("kendall", "tau-a")])
def test_subject_ceiling_equals_rsatoolbox(ours, theirs):
    rng = np.random.default_rng(1)
    shared = rng.random(66)
    vectors = shared + 0.8 * rng.random((5, 66))
    lower, upper = rsa_subject_ceiling([squareform(v) for v in vectors], method=ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_lower, ref_upper = boot_noise_ceiling(RDMs(vectors), method=theirs)
    assert lower == pytest.approx(ref_lower, abs=1e-10)
    assert upper == pytest.approx(ref_upper, abs=1e-10)
    assert lower < upper


def test_ceiling_bad_input():
    with pytest.raises(AlignmentInputError, match="repetitions"):
        split_half_reliability(np.ones((10, 4)))
    with pytest.raises(AlignmentInputError, match="2 repetitions"):
        split_half_reliability(np.ones((10, 1, 3)))
    data = repetitions()
    data[2, 1, 0] = np.nan
    with pytest.raises(AlignmentInputError, match="non-finite"):
        encoding_noise_ceiling(data)
    constant = repetitions()
    constant[:, :, 2] = 1.0
    with pytest.raises(AlignmentInputError, match="units \\[2\\]"):
        split_half_reliability(constant)
    with pytest.raises(AlignmentInputError, match="2 subjects"):
        rsa_subject_ceiling([squareform(np.arange(6.0))])


def test_subject_ceiling_with_plain_mean_pooling():
    rng = np.random.default_rng(2)
    vectors = rng.random(10) + rng.random((3, 10))
    lower, upper = rsa_subject_ceiling([squareform(v) for v in vectors], method="pearson", pool="mean")
    expected_upper = np.mean([np.corrcoef(v, vectors.mean(0))[0, 1] for v in vectors])
    expected_lower = np.mean([np.corrcoef(vectors[i], np.delete(vectors, i, 0).mean(0))[0, 1] for i in range(3)])
    assert (lower, upper) == pytest.approx((expected_lower, expected_upper), abs=1e-12)
