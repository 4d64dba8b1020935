"""Study statistics against hand-computed cases and straightforward loops: the sampling rescale of subsample
distributions (checked by simulation), the three resampling units, paired differences, and calibration: a
condition built to equal the reference is called different at p < 0.05 about as often as expected."""

from __future__ import annotations

import numpy as np
import pytest

from visreps.alignment import Resampling, bootstrap_rsa_models, rdm_pearson
from visreps.alignment.study import (
    DrawIndices, default_resampling_unit, differences_to, draw_indices, sampling_draws, sampling_scale, study_draws,
)
from visreps.alignment.validation import AlignmentInputError


def test_sampling_scale_values_and_degenerate_resampling() -> None:
    assert sampling_scale(100, 90, False) == pytest.approx(3.0)
    assert sampling_scale(100, 100, True) == 1.0 and sampling_scale(100, 25, True) == pytest.approx(0.5)
    with pytest.raises(AlignmentInputError, match="do not vary"):
        sampling_scale(100, 100, False)


def test_rescaled_subsample_spread_matches_the_sampling_spread_of_a_mean() -> None:
    rng = np.random.default_rng(0)
    n = 200
    truth = np.std([rng.standard_normal(n).mean() for _ in range(4000)])  # ≈ 1/√n
    sample = rng.standard_normal(n)
    indices = Resampling(n, 2000, 0.9, False, seed=1).indices()
    subsample_means = sample[indices].mean(axis=1)
    rescaled = sampling_draws(subsample_means, sample.mean(), n, indices.shape[1], False)
    assert subsample_means.std() == pytest.approx(truth / 3, rel=0.15)  # the study's raw spread: 3× too narrow
    assert rescaled.std() == pytest.approx(truth, rel=0.15)
    assert np.median(rescaled) == pytest.approx(sample.mean(), abs=0.1 * truth)


def test_three_resampling_units_on_a_hand_computed_case() -> None:
    # 1 condition, 2 subjects × 2 seeds, 3 resamples
    estimates = [np.array([[1.0, 3.0], [5.0, 7.0]])]
    draws = [np.array([[[1, 2, 3], [3, 4, 5]], [[5, 6, 7], [7, 8, 9]]], dtype=float)]
    point, stimuli = study_draws(estimates, draws, draw_indices("stimuli", 2, 3, [2]))
    assert point[0] == 4.0
    np.testing.assert_array_equal(stimuli[0], [(1 + 3 + 5 + 7) / 4, (2 + 4 + 6 + 8) / 4, (3 + 5 + 7 + 9) / 4])
    subjects = DrawIndices("subjects", np.array([[0, 0], [1, 0], [1, 1]]), None, None)
    np.testing.assert_array_equal(study_draws(estimates, draws, subjects)[1][0], [2.0, 4.0, 6.0])
    hierarchical = DrawIndices("hierarchical", np.array([[0, 1]]), np.array([[2, 0]]), [np.array([[1, 1]])])
    # subject 0 with resample 2, subject 1 with resample 0; seed 1 twice: (5 + 7) / 2
    np.testing.assert_array_equal(study_draws(estimates, draws, hierarchical)[1][0], [6.0])


def test_hierarchical_draws_equal_a_loop_and_pair_subjects_across_conditions() -> None:
    rng = np.random.default_rng(3)
    seeds = [3, 1, 2]
    estimates = [rng.random((4, k)) for k in seeds]
    draws = [rng.random((4, k, 50)) for k in seeds]
    indices = draw_indices("hierarchical", 4, 50, seeds, n_draws=200, seed=9)
    _, result = study_draws(estimates, draws, indices)
    for c in range(3):
        for b in range(0, 200, 17):
            loop = np.mean([draws[c][s, k, indices.resamples[b, j]]
                            for j, s in enumerate(indices.subjects[b]) for k in indices.seeds[c][b]])
            assert result[c, b] == pytest.approx(loop, abs=1e-14)
    assert default_resampling_unit(8) == "hierarchical" and default_resampling_unit(2) == "stimuli"
    with pytest.raises(AlignmentInputError, match="at least 2 subjects"):
        draw_indices("subjects", 1, 10, [1])
    with pytest.raises(AlignmentInputError, match="condition 1"):
        study_draws(estimates[:1] + [rng.random((3, 1))], draws[:1] + [rng.random((3, 1, 50))], indices)


def test_differences_to_the_reference_equal_a_loop() -> None:
    rng = np.random.default_rng(5)
    point = np.array([0.3, 0.32, 0.1])
    draws = point[:, None] + 0.02 * rng.standard_normal((3, 400))
    result = differences_to(point, draws, reference=0, ci_level=0.9)
    assert result[0] is None
    for c in (1, 2):
        d = draws[c] - draws[0]
        assert result[c].difference == pytest.approx(point[c] - point[0])
        assert (result[c].ci_low, result[c].ci_high) == pytest.approx(tuple(np.percentile(d, [5, 95])))
        expected_p = min(1.0, 2 * (1 + min((d <= 0).sum(), (d >= 0).sum())) / (d.size + 1))
        assert result[c].p_value == pytest.approx(expected_p)
    assert result[2].p_value < 0.01


def _null_p_values(n_seeds: int, rescale: bool) -> np.ndarray:
    """p-values of a paired RSA difference between two conditions equal in distribution over stimuli: both read
    the same latents with the same weights plus independent per-stimulus noise; the brain reads them too."""
    p_values = []
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        latents = rng.standard_normal((60, 8))
        brain = latents @ rng.standard_normal((8, 30)) + 1.5 * rng.standard_normal((60, 30))
        weights = rng.standard_normal((8, 40))  # one network's read-out of the latents, per-stimulus noise
        model_a = latents @ weights + 2.0 * rng.standard_normal((60, 40))
        model_b = latents @ weights + 2.0 * rng.standard_normal((60, 40))
        results = bootstrap_rsa_models({"a": rdm_pearson(model_a), "b": rdm_pearson(model_b)}, rdm_pearson(brain),
                                       n_iterations=300, seed=seed)
        estimates = np.array([results["a"].estimate, results["b"].estimate])
        draws = np.stack([results["a"].distribution, results["b"].distribution])
        if rescale:
            draws = sampling_draws(draws, estimates, 60, results["a"].resampling.sample_size, False)
        p_values.append(differences_to(estimates, draws, reference=1)[0].p_value)
    return np.array(p_values)


def test_equal_conditions_are_called_different_about_as_often_as_expected() -> None:
    rescaled = _null_p_values(40, rescale=True)
    assert (rescaled < 0.05).mean() <= 0.125  # expected 5 %; binomial(40, 0.05) exceeds 5 hits in < 2 % of cases
    raw = _null_p_values(40, rescale=False)
    assert (raw < 0.05).mean() >= 0.3  # the study's 90 % subsamples used as they are would call noise an effect
