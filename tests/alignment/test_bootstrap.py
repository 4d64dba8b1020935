"""Bootstraps: batched paths equal the straightforward SciPy loop for the same seed; paired tests; BH."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import squareform

from visreps.alignment import (
    AlignmentInputError,
    Resampling,
    benjamini_hochberg,
    bootstrap_encoding,
    bootstrap_rsa,
    bootstrap_rsa_models,
    paired_bootstrap_rsa,
    paired_difference,
    rdm_pearson,
    rsa_resample_scores,
)
from visreps.alignment import _rank_kernels
from visreps.alignment.reference_loops import (
    _resampled_upper,
    encoding_resample_scores_loop,
    rsa_resample_scores_loop,
)

BACKENDS = ["torch", "loop"] + (["numba"] if _rank_kernels.HAVE_NUMBA else [])


@pytest.fixture(scope="module")
def rdms() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((40, 6))
    neural = rdm_pearson(latent @ rng.standard_normal((6, 30)) + rng.standard_normal((40, 30))).numpy()
    model = rdm_pearson(latent @ rng.standard_normal((6, 50)) + 2 * rng.standard_normal((40, 50))).numpy()
    tied = squareform(np.round(squareform(model, checks=False) * 4) / 4)  # many ties
    return {"neural": neural, "model": model, "tied": tied}


def test_resampling_is_seeded_and_shaped():
    a, b = Resampling(50, 30, seed=1), Resampling(50, 30, seed=1)
    np.testing.assert_array_equal(a.indices(), b.indices())
    assert not np.array_equal(a.indices(), Resampling(50, 30, seed=2).indices())
    assert a.indices().shape == (30, 45) and a.sample_size == 45
    assert all(np.unique(row).size == 45 for row in a.indices())
    assert (a.counts().sum(axis=1) == 45).all() and a.counts().max() == 1
    classical = Resampling(50, 30, replace=True, seed=1)
    assert classical.fraction == 1.0 and classical.counts().sum(axis=1).tolist() == [50] * 30
    assert classical.counts().max() > 1
    with pytest.raises(AlignmentInputError, match="at least 3"):
        Resampling(3, 5, fraction=0.5)
    with pytest.raises(AlignmentInputError, match="fraction"):
        Resampling(30, 5, fraction=1.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["spearman", "kendall", "pearson"])
@pytest.mark.parametrize("replace", [False, True])
def test_rsa_batched_equals_scipy_loop(rdms, backend, method, replace):
    if method == "kendall" and backend == "torch":
        pytest.skip("Kendall has no torch backend")
    counts = Resampling(40, 25, replace=replace, seed=7).counts()
    models = [rdms["model"], rdms["tied"]]
    for neural in (rdms["neural"], rdms["tied"]):
        expected = rsa_resample_scores_loop(models, neural, counts, method)
        got = rsa_resample_scores(models, neural, counts, method=method, backend=backend)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_loop_reference_is_plain_scipy(rdms):
    """The loop itself: resample 0 without replacement is spearmanr on the sub-RDMs' upper triangles."""
    resampling = Resampling(40, 3, seed=2)
    keep = resampling.indices()[0]
    expected = scipy.stats.spearmanr(squareform(rdms["model"][np.ix_(keep, keep)], checks=False),
                                     squareform(rdms["neural"][np.ix_(keep, keep)], checks=False)).statistic
    got = rsa_resample_scores_loop([rdms["model"]], rdms["neural"], resampling.counts(), "spearman")[0, 0]
    assert got == pytest.approx(expected, abs=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_with_replacement_duplicates_count_twice_and_self_pairs_are_dropped(backend):
    """Hand case: stimulus 0 drawn twice, 3 not drawn. Pairs (0, j) appear twice, the (0, 0) self-pair
    (a zero distance, not data) never; scores equal SciPy on exactly that hand-built vector."""
    rng = np.random.default_rng(8)
    model, neural = squareform(rng.random(15)), squareform(np.round(rng.random(15), 1))  # 6 stimuli, ties
    counts = np.array([[2, 1, 1, 0, 1, 1]])
    pairs = [(0, 1), (0, 1), (0, 2), (0, 2), (0, 4), (0, 4), (0, 5), (0, 5), (1, 2), (1, 4), (1, 5), (2, 4),
             (2, 5), (4, 5)]
    hand_model = np.array([model[i, j] for i, j in pairs])
    hand_neural = np.array([neural[i, j] for i, j in pairs])
    indices = np.repeat(np.arange(6), counts[0])
    np.testing.assert_array_equal(np.sort(_resampled_upper(model, indices)), np.sort(hand_model))
    expected = {"spearman": scipy.stats.spearmanr(hand_model, hand_neural).statistic,
                "pearson": scipy.stats.pearsonr(hand_model, hand_neural).statistic,
                "kendall": brute_force_tau_a(hand_model, hand_neural)}
    for method, value in expected.items():
        if method == "kendall" and backend == "torch":
            continue
        got = rsa_resample_scores([model], neural, counts, method=method, backend=backend)[0, 0]
        assert got == pytest.approx(value, abs=1e-12), method


def brute_force_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    signs = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
    return float(signs[np.triu_indices(x.size, 1)].sum() / (x.size * (x.size - 1) / 2))


def test_bootstrap_rsa_result(rdms):
    result = bootstrap_rsa(rdms["model"], rdms["neural"], n_iterations=200, seed=3)
    full = scipy.stats.spearmanr(squareform(rdms["model"], checks=False),
                                 squareform(rdms["neural"], checks=False)).statistic
    assert result.estimate == pytest.approx(full, abs=1e-12)
    assert result.distribution.shape == (200,)
    assert result.ci_low == pytest.approx(np.percentile(result.distribution, 2.5))
    assert result.ci_high == pytest.approx(np.percentile(result.distribution, 97.5))
    assert result.ci_low < result.estimate < result.ci_high
    again = bootstrap_rsa(rdms["model"], rdms["neural"], n_iterations=200, seed=3)
    np.testing.assert_array_equal(result.distribution, again.distribution)


def test_paired_comparison_uses_the_same_resamples(rdms):
    results = bootstrap_rsa_models({"a": rdms["model"], "b": rdms["tied"]}, rdms["neural"], n_iterations=100, seed=5)
    single = bootstrap_rsa(rdms["tied"], rdms["neural"], n_iterations=100, seed=5)
    np.testing.assert_array_equal(results["b"].distribution, single.distribution)
    paired = paired_bootstrap_rsa(rdms["model"], rdms["tied"], rdms["neural"], n_iterations=100, seed=5)
    np.testing.assert_allclose(paired.distribution, results["a"].distribution - results["b"].distribution)
    assert paired.difference == pytest.approx(results["a"].estimate - results["b"].estimate)
    assert 0 < paired.p_value <= 1
    better = paired_bootstrap_rsa(rdms["neural"], rdms["model"], rdms["neural"], n_iterations=100, seed=5)
    assert better.p_value == pytest.approx(2 / 101) and better.ci_low > 0
    with pytest.raises(AlignmentInputError, match="same resampling"):
        paired_difference(results["a"], bootstrap_rsa(rdms["model"], rdms["neural"], n_iterations=100, seed=6))



def test_paired_difference_ci_and_p_value_equal_a_loop_over_the_same_draws(rdms):
    """The paired CI and p-value against a plain loop: SciPy Spearman of both models on every resample."""
    paired = paired_bootstrap_rsa(rdms["model"], rdms["tied"], rdms["neural"], n_iterations=120, seed=11)
    counts = Resampling(rdms["neural"].shape[0], 120, seed=11).counts()
    scores = rsa_resample_scores_loop([rdms["model"], rdms["tied"]], rdms["neural"], counts, "spearman")
    differences = scores[:, 0] - scores[:, 1]
    np.testing.assert_allclose(paired.distribution, differences, atol=1e-12)
    low, high = np.percentile(differences, [2.5, 97.5])
    assert paired.ci_low == pytest.approx(low, abs=1e-12) and paired.ci_high == pytest.approx(high, abs=1e-12)
    extreme = min((differences <= 0).sum(), (differences >= 0).sum())
    assert paired.p_value == pytest.approx(min(1.0, 2 * (1 + extreme) / 121))

@pytest.mark.parametrize("replace", [False, True])
def test_encoding_bootstrap_equals_loop(replace):
    rng = np.random.default_rng(1)
    responses = rng.standard_normal((60, 300))
    predictions = 0.4 * responses + rng.standard_normal((60, 300)) + 5.0
    result = bootstrap_encoding(predictions, responses, n_iterations=50, replace=replace, seed=9, target_batch=128)
    indices = Resampling(60, 50, replace=replace, seed=9).indices()
    expected = encoding_resample_scores_loop(predictions, responses, indices)
    np.testing.assert_allclose(result.distribution, expected, rtol=0, atol=1e-12)
    per_target = [scipy.stats.pearsonr(predictions[:, t], responses[:, t]).statistic for t in range(300)]
    np.testing.assert_allclose(result.extras["per_target_r"], per_target, atol=1e-12)
    assert result.estimate == pytest.approx(np.mean(per_target), abs=1e-12)
    weaker = bootstrap_encoding(predictions + 2 * rng.standard_normal(predictions.shape), responses,
                                n_iterations=50, replace=replace, seed=9)
    paired = paired_difference(result, weaker)
    np.testing.assert_allclose(paired.distribution, result.distribution - weaker.distribution)
    assert paired.difference > 0 and paired.ci_low > 0 and paired.p_value == pytest.approx(2 / 51)


def test_a_constant_prediction_scores_zero():
    """A target the ridge could not predict (alpha -> inf: constant predictions) counts r = 0, in the estimate and
    in every resample, instead of stopping the evaluation."""
    rng = np.random.default_rng(3)
    responses = rng.standard_normal((40, 5))
    predictions = 0.5 * responses + rng.standard_normal((40, 5))
    predictions[:, 2] = 1.5
    result = bootstrap_encoding(predictions, responses, n_iterations=30, seed=4)
    assert result.extras["per_target_r"][2] == 0.0
    others = [scipy.stats.pearsonr(predictions[:, t], responses[:, t]).statistic for t in (0, 1, 3, 4)]
    assert result.estimate == pytest.approx(sum(others) / 5, abs=1e-12)
    indices = Resampling(40, 30, seed=4).indices()
    kept = np.delete(np.arange(5), 2)
    expected = encoding_resample_scores_loop(predictions[:, kept], responses[:, kept], indices) * 4 / 5
    np.testing.assert_allclose(result.distribution, expected, atol=1e-12)


def test_encoding_bootstrap_bad_input():
    rng = np.random.default_rng(2)
    y = rng.standard_normal((20, 4))
    with pytest.raises(AlignmentInputError, match="constant"):
        bootstrap_encoding(y, np.c_[y[:, :3], np.ones(20)])
    with pytest.raises(AlignmentInputError, match="non-finite"):
        bootstrap_encoding(y, np.where(y > 1.5, np.nan, y))
    with pytest.raises(AlignmentInputError, match="20 stimuli but"):
        bootstrap_encoding(y, y[:10])


def test_rsa_bootstrap_bad_input(rdms):
    with pytest.raises(AlignmentInputError, match="same stimuli"):
        bootstrap_rsa(rdms["model"][:30, :30], rdms["neural"])
    with pytest.raises(AlignmentInputError, match="backend"):
        bootstrap_rsa(rdms["model"], rdms["neural"], backend="gpu-magic")
    tiny = squareform([1.0, 1.0, 0.5, 1.0, 0.2, 0.9])  # stimuli 0, 1, 2 are equidistant
    for method in ("spearman", "pearson"):
        with pytest.raises(AlignmentInputError, match="undefined.*iteration"):
            bootstrap_rsa(tiny, squareform([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), n_iterations=30, fraction=0.75,
                          method=method)


def test_benjamini_hochberg_equals_scipy():
    p = np.random.default_rng(4).random(40) ** 3
    rejected, adjusted = benjamini_hochberg(p, alpha=0.1)
    np.testing.assert_allclose(adjusted, scipy.stats.false_discovery_control(p, method="bh"), atol=1e-15)
    np.testing.assert_array_equal(rejected, adjusted <= 0.1)
    assert benjamini_hochberg([0.01, 0.04, 0.03])[1] == pytest.approx([0.03, 0.04, 0.04])
    with pytest.raises(AlignmentInputError):
        benjamini_hochberg([0.5, np.nan])
