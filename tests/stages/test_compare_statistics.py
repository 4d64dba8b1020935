"""The comparison table from evaluation tables: means, paired differences, BH q-values (against SciPy) and the
smallest K not below the reference, on frames shaped like evaluation parent runs' tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from visreps.alignment import Resampling, differences_to, sampling_draws
from visreps.stages.compare_statistics import (
    ComparisonError, Evaluation, compare_conditions, smallest_k_not_below,
)

N_TEST, N_BOOT = 50, 200
SUBJECTS = ("sub-01", "sub-02")


def _evaluation(run_id: str, condition: str, scores: dict[str, float], role: str, k: float, rng, seed="1",
                fingerprint="abc") -> Evaluation:
    tidy, pairs, boot = [], [], []
    for subject, score in scores.items():
        tidy += [{"subject": subject, "region": "ventral", "metric": "score", "value": score},
                 {"subject": subject, "region": "ventral", "metric": "noise_ceiling", "value": 0.8}]
        pairs.append({"subject": subject, "region": "ventral", "test_stimuli_fingerprint": fingerprint,
                      "n_test_stimuli": N_TEST, "n_bootstrap": N_BOOT, "bootstrap_fraction": 0.9,
                      "bootstrap_replace": False, "bootstrap_seed": 0})
        boot.append(pd.DataFrame({"subject": subject, "region": "ventral", "iteration": np.arange(N_BOOT),
                                  "score": score + 0.01 * rng.standard_normal(N_BOOT)}))
    return Evaluation(run_id, condition, seed, pd.DataFrame(tidy), pd.DataFrame(pairs), pd.concat(boot),
                      {"role": role, "label_source": "fine" if role == "reference" else "pca", "K": k})


@pytest.fixture
def evaluations() -> list[Evaluation]:
    rng = np.random.default_rng(0)
    return [_evaluation("fine", "fine", {"sub-01": 0.40, "sub-02": 0.42}, "reference", np.nan, rng),
            _evaluation("k2", "pca K=2", {"sub-01": 0.20, "sub-02": 0.22}, "condition", 2, rng),
            _evaluation("k8", "pca K=8", {"sub-01": 0.40, "sub-02": 0.419}, "condition", 8, rng),
            _evaluation("untrained", "untrained", {"sub-01": 0.05, "sub-02": 0.06}, "untrained", np.nan, rng)]


def test_table_equals_the_study_functions_and_bh_equals_scipy(evaluations) -> None:
    table = compare_conditions(evaluations, n_draws=300, seed=1)
    raw = table[table.measure == "raw"].set_index("condition")
    assert raw.loc["pca K=2", "mean"] == pytest.approx(0.21) and raw.loc["fine", "resampling"] == "stimuli"
    kept = Resampling(N_TEST, N_BOOT, 0.9).sample_size
    means = []
    for evaluation in evaluations:  # stimuli unit: resample b of both subjects, rescaled, averaged
        draws = [sampling_draws(evaluation.bootstrap[evaluation.bootstrap.subject == s].score.to_numpy(),
                                evaluation.results.query("subject == @s and metric == 'score'").value.iloc[0],
                                N_TEST, kept, False) for s in SUBJECTS]
        means.append(np.mean(draws, axis=0))
    point = raw["mean"].to_numpy()
    expected = differences_to(point, np.stack(means), reference=0)
    assert raw.loc["pca K=2", "p_vs_reference"] == pytest.approx(expected[1].p_value)
    assert raw.loc["pca K=2", "difference_ci_low_vs_reference"] == pytest.approx(expected[1].ci_low)
    p = raw[["p_vs_reference", "p_vs_untrained"]].to_numpy().ravel()
    q = raw[["q_vs_reference", "q_vs_untrained"]].to_numpy().ravel()
    present = np.isfinite(p)
    np.testing.assert_allclose(q[present], scipy.stats.false_discovery_control(p[present]))
    assert list(raw["rank"]) == [1.0, 3.0, 2.0, 4.0] and raw.loc["untrained", "rank_ci_low"] == 4.0
    assert bool(raw.loc["pca K=2", "below_reference"]) and not bool(raw.loc["pca K=8", "below_reference"])
    normalised = table[table.measure == "normalised"].set_index("condition")
    assert normalised.loc["fine", "mean"] == pytest.approx(0.41 / 0.8)
    answer = smallest_k_not_below(table)
    assert set(answer.smallest_K) == {8} and set(answer.measure) == {"raw", "normalised"}


def test_unpairable_and_reference_less_comparisons_are_refused(evaluations) -> None:
    rng = np.random.default_rng(1)
    other = _evaluation("k4", "pca K=4", {"sub-01": 0.3, "sub-02": 0.3}, "condition", 4, rng, fingerprint="zzz")
    with pytest.raises(ComparisonError, match="fine and k4 differ in test_stimuli_fingerprint"):
        compare_conditions(evaluations + [other])
    with pytest.raises(ComparisonError, match="no evaluation matches the reference"):
        compare_conditions(evaluations[1:])


def _demo_null_evaluations(seed: int) -> list[Evaluation]:
    """Two networks equal in distribution on the demo's ground truth: the demo's ventral features (latents
    through its nonlinearity) read with independent per-stimulus noise, scored against one demo subject's
    simulated ventral voxels on 60 test stimuli, with the study's 90 % resamples."""
    from visreps.alignment import bootstrap_rsa_models, rdm_pearson
    from visreps.data.demo import DemoDataConfig, brain_stimulus_latents
    from visreps.data.demo import brain as ground_truth

    config = DemoDataConfig(seed=seed, n_subjects=1, n_test_stimuli=60, n_train_stimuli_per_subject=16, n_voxels=40)
    latents, owner = brain_stimulus_latents(config)
    features = ground_truth.ventral_features(latents[owner == "shared"].reset_index(drop=True), seed)
    brain = ground_truth.simulate_region(features, 0, "ventral", seed, config.n_voxels, config.noise_sd_ventral,
                                         config.n_repetitions)["average"]
    rng = np.random.default_rng(seed)
    networks = {name: features + features.std() * 1.5 * rng.standard_normal(features.shape) for name in ("fine", "k8")}
    results = bootstrap_rsa_models({name: rdm_pearson(x) for name, x in networks.items()}, rdm_pearson(brain),
                                   n_iterations=300, seed=seed)
    pairs = pd.DataFrame([{"subject": "s1", "region": "ventral", "test_stimuli_fingerprint": "demo", "n_test_stimuli": 60,
                           "n_bootstrap": 300, "bootstrap_fraction": 0.9, "bootstrap_replace": False, "bootstrap_seed": seed}])
    out = []
    for name, role in (("fine", "reference"), ("k8", "condition")):
        tidy = pd.DataFrame([{"subject": "s1", "region": "ventral", "metric": "score", "value": results[name].estimate}])
        boot = pd.DataFrame({"subject": "s1", "region": "ventral", "iteration": np.arange(300),
                             "score": results[name].distribution})
        out.append(Evaluation(name, name, "1", tidy, pairs, boot, {"role": role, "label_source": name, "K": 8.0}))
    return out


def test_on_the_demo_ground_truth_an_equal_condition_is_rarely_called_different() -> None:
    q_values = []
    for seed in range(40):
        table = compare_conditions(_demo_null_evaluations(seed), unit="stimuli")
        q_values.append(float(table.loc[table.condition == "k8", "q_vs_reference"].iloc[0]))
    assert (np.array(q_values) < 0.05).mean() <= 0.125  # expected 5 %; binomial(40, 0.05) > 5 hits in < 2 % of cases
