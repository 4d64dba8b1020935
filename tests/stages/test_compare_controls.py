"""The pure parts of compare's controls against direct computations: stimulus subsets (same for every network,
of the right size, scored as the RDMs restricted to them), ranking reliability against scipy on hand-made
rankings, and the robustness summary on a hand-made comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from visreps.alignment import Resampling, rdm_pearson
from visreps.stages.compare_controls import (
    ControlsConfig, PairTest, seed_ranking_reliability, subset_counts, subset_robustness, subset_scores,
)
from visreps.stages.compare_statistics import ComparisonError, Evaluation


def _upper(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices(matrix.shape[0], 1)]


def test_subsets_are_seeded_sized_and_shared() -> None:
    config = ControlsConfig(n_subsets=6, subset_fraction=0.4, subset_bootstrap=50, seed=3)
    members, boots = subset_counts(40, config)
    again, boots_again = subset_counts(40, config)
    assert np.array_equal(members, again) and np.array_equal(boots, boots_again)
    assert members.shape == (6, 40) and (members.sum(axis=1) == 16).all()
    assert len({tuple(row) for row in members}) == 6, "subsets differ from each other"
    assert (boots.sum(axis=2) == 16).all(), "each bootstrap draws as many stimuli as the subset has"
    assert ((boots > 0) <= (members[:, None, :] > 0)).all(), "the bootstrap stays inside its subset"
    other, _ = subset_counts(40, config.model_copy(update={"seed": 4}))
    assert not np.array_equal(members, other)
    with pytest.raises(ComparisonError, match="subset_fraction"):
        subset_counts(6, config)


def test_subset_scores_are_the_rdms_restricted_to_the_subset() -> None:
    rng = np.random.default_rng(0)
    features, responses = rng.normal(size=(30, 20)), rng.normal(size=(30, 8))
    features[:, :3] += responses[:, :3]
    model, neural = rdm_pearson(features), rdm_pearson(responses)
    test = PairTest("s1", "early", features, neural, model, "spearman", Resampling(30, 100, 0.9, False, 0))
    config = ControlsConfig(n_subsets=4, subset_fraction=0.5, subset_bootstrap=30, seed=1)
    scores, boots = subset_scores(test, config)
    members, counts = subset_counts(30, config)
    for s in range(4):
        kept = np.flatnonzero(members[s])
        expected = spearmanr(_upper(model.numpy()[np.ix_(kept, kept)]), _upper(neural.numpy()[np.ix_(kept, kept)])).statistic
        assert scores[s] == pytest.approx(expected, abs=1e-9)
    assert boots.shape == (4, 30) and np.isfinite(boots).all() and boots.std() > 0


def _evaluation(condition: str, seed: str, means: dict[str, float]) -> Evaluation:
    results = pd.DataFrame([{"subject": subject, "region": "v1", "metric": "score", "value": value + offset}
                            for subject, offset in (("a", -0.01), ("b", 0.01)) for value in [means[condition]]])
    return Evaluation(f"run-{condition}-{seed}", condition, seed, results, pd.DataFrame(), pd.DataFrame(), {})


def test_seed_ranking_reliability_is_spearman_between_seeds() -> None:
    seed_1 = {"c1": 0.1, "c2": 0.3, "c3": 0.2, "c4": 0.5}
    seed_2 = {"c1": 0.2, "c2": 0.1, "c3": 0.3, "c4": 0.6}
    evaluations = [_evaluation(c, "1", seed_1) for c in seed_1] + [_evaluation(c, "2", seed_2) for c in seed_2]
    row = seed_ranking_reliability(evaluations).iloc[0]
    expected = spearmanr(list(seed_1.values()), list(seed_2.values())).statistic
    assert row["between"] == "seeds" and row.n_pairs == 1 and row.n_conditions == 4
    assert row.spearman_mean == pytest.approx(expected) and row.spearman_min == pytest.approx(expected)
    single = seed_ranking_reliability([_evaluation(c, "1", seed_1) for c in seed_1]).iloc[0]
    assert single.n_pairs == 0 and np.isnan(single.spearman_mean), "one seed: no reliability, not a made-up 1"


def test_robustness_counts_how_often_each_call_holds() -> None:
    def table(means: list[float], below: list[bool]) -> pd.DataFrame:
        return pd.DataFrame({"region": "v1", "measure": "raw", "condition": ["fine", "k2", "k4"],
                             "role": ["reference", "condition", "condition"], "mean": means,
                             "p_vs_reference": [np.nan, 0.01, 0.5], "below_reference": [False, *below]})

    full = table([0.5, 0.2, 0.45], [True, False])
    subsets = [table([0.5, 0.2, 0.4], [True, False]), table([0.5, 0.3, 0.45], [False, False]),
               table([0.4, 0.2, 0.5], [True, True]), table([0.5, 0.1, 0.4], [True, False])]
    robustness, reliability = subset_robustness(full, subsets)
    held = robustness.set_index("condition")
    assert held.loc["k2", "below_reference_holds"] == pytest.approx(0.75)
    assert held.loc["k4", "below_reference_holds"] == pytest.approx(0.75)
    assert held.loc["k2", "subset_mean"] == pytest.approx(0.2) and bool(held.loc["k2", "below_reference_full"])
    assert np.isnan(held.loc["fine"].get("below_reference_holds", np.nan)), "no call for the reference itself"
    rankings = [t["mean"].to_numpy() for t in subsets]
    pairwise = [spearmanr(a, b).statistic for i, a in enumerate(rankings) for b in rankings[i + 1:]]
    row = reliability.iloc[0]
    assert row.n_pairs == 6 and row.spearman_mean == pytest.approx(np.mean(pairwise))
    assert row.spearman_min == pytest.approx(min(pairwise))


def test_undefined_subset_draws_are_dropped_for_every_network_alike() -> None:
    from visreps.stages.compare_controls import subset_evaluations

    config = ControlsConfig(n_subsets=1, subset_fraction=0.5, subset_bootstrap=30)
    pairs = pd.DataFrame([{"subject": "a", "region": "v1", "test_stimuli_fingerprint": "f", "n_test_stimuli": 40,
                           "n_bootstrap": 100, "bootstrap_fraction": 0.9, "bootstrap_replace": False, "bootstrap_seed": 0}])
    rng = np.random.default_rng(0)
    collected = []
    for name, bad in (("fine", 3), ("k2", 7)):
        draws = rng.normal(size=30)
        draws[bad] = np.nan
        evaluation = Evaluation(name, name, "1", pd.DataFrame(columns=["subject", "region", "metric", "value"]),
                                pairs, pd.DataFrame(), {"role": "reference" if name == "fine" else "condition"})
        collected.append((evaluation, {("a", "v1"): 0.2}, {("a", "v1"): draws}))
    out = subset_evaluations(collected, 0, config)
    for evaluation, (_, _, draws) in zip(out, collected):
        kept = evaluation.bootstrap.score.to_numpy()
        assert kept.size == 28 and np.array_equal(kept, np.delete(draws[("a", "v1")], [3, 7]))
        assert int(evaluation.pairs.n_bootstrap.iloc[0]) == 28 and int(evaluation.pairs.n_test_stimuli.iloc[0]) == 20
    collected[1][1][("a", "v1")] = float("nan")
    with pytest.raises(ComparisonError, match="run k2 on stimulus subset 0 of a/v1 is undefined"):
        subset_evaluations(collected, 0, config)
