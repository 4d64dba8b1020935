"""Controls of a comparison that need the activations again: the PCA-reconstruction control and robustness to the
stimulus set (RSA evaluations), and the reliability of the condition ranking between training seeds (any analysis).

Each evaluation is re-opened from its own logged configuration (``config.yaml``): the same model, dataset and
split; the selected point of each (subject, region) comes from its ``pairs.csv``. The re-extracted test
activations must reproduce the logged score, else the model or the data changed since and the control refuses.

- Reconstruction (SPEC §7): the reference networks' selected-point test activations rebuilt from their top M
  principal components (``pca_reconstruction_rdms``), scored by RSA on the evaluation's own resamples, so each
  M is a condition of a comparison with the reference (paired differences, q-values) like any network.
- Stimulus subsets: ``n_subsets`` seeded subsets of ``subset_fraction`` of each pair's test stimuli, the same
  for every network; within each, scores and a classical bootstrap (with replacement, ``subset_bootstrap``
  draws) feed the same comparison. Reported: how often each condition's "below the reference/untrained" call
  on the full set holds on a subset, and the Spearman correlation of the condition ranking between subsets.
- Seeds: the Spearman correlation of the condition ranking (mean over subjects) between training seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Iterator

import numpy as np
import pandas as pd
from pydantic import Field

from visreps.alignment import Resampling, compare_rdms, pca_reconstruction_rdms, rdm_pearson, rsa_resample_scores
from visreps.config import ConfigModel, runtime_field
from visreps.stages.compare_statistics import REFERENCE, UNTRAINED, ComparisonError, Evaluation, compare_conditions

#: |re-extracted − logged| score above which the activations are not the evaluated ones
REPRODUCTION_TOLERANCE = 1e-5


class ControlsConfig(ConfigModel):
    """The controls of a compare run (RSA evaluations; ranking reliability between seeds for every analysis)."""

    reconstruction_components: list[int] = Field(default_factory=lambda: list(range(1, 16)),
                                                 description="M of the PCA-reconstruction control ([] = off)")
    n_subsets: int = Field(10, ge=0, description="stimulus subsets of the robustness control (0 = off)")
    subset_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="share of each pair's test stimuli per subset")
    subset_bootstrap: int = Field(100, ge=20, description="bootstrap draws with replacement within a subset "
                                                          "(n_subsets × (1 + this) rescorings per network and pair)")
    seed: int = Field(0, description="seed of the subsets and of their bootstrap draws")
    device: str = runtime_field("auto", description="where activations are re-extracted and scored")
    progress: bool = runtime_field(True)


@dataclass
class PairTest:
    """One (subject, region) of an evaluation, re-opened: its test activations and brain RDM."""

    subject: str
    region: str
    features: Any  # (n_test, D) exact activations of the selected point
    neural_rdm: Any  # (n_test, n_test)
    model_rdm: Any  # (n_test, n_test)
    method: str  # the evaluation's RSA comparison (spearman, kendall)
    resampling: Resampling  # the evaluation's resamples of this pair


def evaluation_config(run_id: str, device: str):
    """The EvaluateConfig a finished evaluation run logged (``config.yaml``), on ``device``, without progress bars."""
    from visreps.config import read_yaml
    from visreps.stages.evaluate_config import EvaluateConfig
    from visreps.tracking import download_artifacts

    logged = read_yaml(download_artifacts(run_id, "config.yaml"))
    return EvaluateConfig.model_validate({**logged, "device": device, "progress": False, "force": False})


def pair_tests(evaluation: Evaluation, device: str) -> Iterator[PairTest]:
    """Every (subject, region) of ``evaluation`` re-opened from its logged configuration; ComparisonError when the
    inputs changed or the activations do not reproduce the logged score."""
    from visreps.stages.evaluate import exact_activations, prepare
    from visreps.tracking import finished_run

    tags = finished_run(evaluation.run_id).tags
    plan = prepare(evaluation_config(evaluation.run_id, device))
    for name, tag in (("model", "visreps.weights_fingerprint"), ("dataset", "visreps.data_fingerprint")):
        if tags.get(tag) and plan.inputs[name] != tags[tag]:
            raise ComparisonError(f"the {name} of evaluation run {evaluation.run_id} changed since it was evaluated "
                                  f"(fingerprint {tags[tag]}, now {plan.inputs[name]}); evaluate it again or drop "
                                  "the controls (controls.reconstruction_components=[] controls.n_subsets=0)")
    scores = evaluation.results[evaluation.results.metric == "score"].set_index(["subject", "region"]).value
    for pair in evaluation.pairs.itertuples():
        responses = plan.dataset.responses(pair.subject, pair.region)
        features = exact_activations(plan, pair.selected_point, [str(i) for i in responses.test_ids])
        neural = rdm_pearson(responses.test, on_constant="error", name="test responses", device=plan.device)
        model = rdm_pearson(features, device=plan.device, name=f"test features of point {pair.selected_point!r}")
        method = plan.config.compare
        score, logged = compare_rdms(model, neural, method), float(scores.loc[(pair.subject, pair.region)])
        if abs(score - logged) > REPRODUCTION_TOLERANCE:
            raise ComparisonError(f"the activations of evaluation run {evaluation.run_id} at {pair.selected_point} do "
                                  f"not reproduce its score for {pair.subject}/{pair.region} (logged {logged:.6f}, now "
                                  f"{score:.6f}); the model or its extraction changed: evaluate it again (force=true)")
        resampling = Resampling(int(pair.n_test_stimuli), int(pair.n_bootstrap), float(pair.bootstrap_fraction),
                                str(pair.bootstrap_replace).lower() == "true", int(pair.bootstrap_seed))
        yield PairTest(pair.subject, pair.region, features, neural, model, method, resampling)


def _scored(source: Evaluation, condition: str, info: dict[str, Any], scores: dict[tuple[str, str], float],
            draws: dict[tuple[str, str], np.ndarray], pairs: pd.DataFrame | None = None) -> Evaluation:
    """An Evaluation of scores computed here (per pair a score and its resamples), pairable with ``source``."""
    ceilings = source.results[source.results.metric == "noise_ceiling"]
    results = pd.concat([pd.DataFrame([{"subject": s, "region": r, "metric": "score", "value": v}
                                       for (s, r), v in scores.items()]), ceilings], ignore_index=True)
    boot = pd.DataFrame([{"subject": s, "region": r, "iteration": i, "score": float(v)}
                         for (s, r), values in draws.items() for i, v in enumerate(values)])
    return Evaluation(source.run_id, condition, source.seed, results, source.pairs if pairs is None else pairs, boot, info)


def reconstruction_scores(test: PairTest, components: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(scores (M,), resamples (n_resamples × M)) of the pair's activations rebuilt from each M of ``components``,
    on the evaluation's own resamples."""
    rdms = pca_reconstruction_rdms(test.features, components, device=test.neural_rdm.device)
    models = [rdms[m] for m in components]
    scores = np.array([compare_rdms(model, test.neural_rdm, test.method) for model in models])
    return scores, rsa_resample_scores(models, test.neural_rdm, test.resampling.counts(), method=test.method)


def subset_counts(n_stimuli: int, config: ControlsConfig) -> tuple[np.ndarray, np.ndarray]:
    """(members (n_subsets × n) 0/1, bootstrap counts (n_subsets × subset_bootstrap × n)), int32: seeded by
    ``config.seed`` and ``n_stimuli`` alone, so every network of a pair gets the same subsets and draws."""
    size = subset_size(n_stimuli, config)
    rng = np.random.default_rng([config.seed, n_stimuli])
    members = np.zeros((config.n_subsets, n_stimuli), dtype=np.int32)
    boots = np.zeros((config.n_subsets, config.subset_bootstrap, n_stimuli), dtype=np.int32)
    for s in range(config.n_subsets):
        chosen = np.sort(rng.choice(n_stimuli, size, replace=False))
        members[s, chosen] = 1
        boots[s][:, chosen] = Resampling(size, config.subset_bootstrap, 1.0, True, config.seed + s).counts()
    return members, boots


def subset_size(n_stimuli: int, config: ControlsConfig) -> int:
    """Stimuli in each subset of a pair with ``n_stimuli`` test stimuli; ComparisonError below 3."""
    size = int(round(config.subset_fraction * n_stimuli))
    if size < 3:
        raise ComparisonError(f"a stimulus subset of {config.subset_fraction:.0%} of {n_stimuli} test stimuli keeps "
                              f"{size}; raise controls.subset_fraction")
    return size


def subset_scores(test: PairTest, config: ControlsConfig) -> tuple[np.ndarray, np.ndarray]:
    """(scores (n_subsets,), bootstrap scores (n_subsets × subset_bootstrap)) of the pair's network per subset."""
    members, boots = subset_counts(test.neural_rdm.shape[0], config)
    counts = np.concatenate([members, boots.reshape(-1, members.shape[1])])
    scores = rsa_resample_scores([test.model_rdm], test.neural_rdm, counts, method=test.method)[:, 0]
    return scores[:config.n_subsets], scores[config.n_subsets:].reshape(config.n_subsets, config.subset_bootstrap)


def subset_pairs(pairs: pd.DataFrame, subset: int, config: ControlsConfig, n_bootstrap: int) -> pd.DataFrame:
    """``pairs.csv`` of an evaluation as scored on one stimulus subset (its size and its bootstrap)."""
    return pairs.assign(test_stimuli_fingerprint=pairs.test_stimuli_fingerprint.astype(str) + f"/subset{subset}",
                        n_test_stimuli=[subset_size(int(n), config) for n in pairs.n_test_stimuli],
                        n_bootstrap=n_bootstrap, bootstrap_fraction=1.0, bootstrap_replace=True,
                        bootstrap_seed=config.seed + subset)


def subset_evaluations(collected: list[tuple[Evaluation, dict, dict]], subset: int, config: ControlsConfig
                       ) -> list[Evaluation]:
    """Every network scored on one subset, as Evaluations. A bootstrap draw whose score is undefined for some
    network or pair (too few distinct stimuli drawn, a constant sub-RDM) is dropped for all of them alike, so the
    draws stay paired; ComparisonError when a subset score itself is undefined or fewer than 20 draws remain."""
    keep = np.ones(config.subset_bootstrap, dtype=bool)
    for evaluation, scores, draws in collected:
        undefined = [key for key, value in scores.items() if not np.isfinite(value)]
        if undefined:
            raise ComparisonError(f"the RSA score of evaluation run {evaluation.run_id} on stimulus subset {subset} "
                                  f"of {undefined[0][0]}/{undefined[0][1]} is undefined (too few stimuli); raise "
                                  "controls.subset_fraction or set controls.n_subsets=0")
        for values in draws.values():
            keep &= np.isfinite(values)
    if keep.sum() < 20:
        raise ComparisonError(f"only {int(keep.sum())} of {config.subset_bootstrap} bootstrap draws of stimulus "
                              f"subset {subset} give defined scores; raise controls.subset_fraction")
    return [_scored(evaluation, evaluation.condition, dict(evaluation.info), scores,
                    {key: values[keep] for key, values in draws.items()},
                    subset_pairs(evaluation.pairs, subset, config, int(keep.sum())))
            for evaluation, scores, draws in collected]


def _spearman_summary(rankings: list[pd.Series]) -> dict[str, float]:
    """Mean, min and max Spearman correlation over all pairs of rankings (on the conditions both contain)."""
    from scipy.stats import spearmanr

    values = []
    for a, b in combinations(rankings, 2):
        common = a.index.intersection(b.index)
        if len(common) >= 3:
            values.append(float(spearmanr(a[common], b[common]).statistic))
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return {"n_pairs": 0, "spearman_mean": np.nan, "spearman_min": np.nan, "spearman_max": np.nan}
    return {"n_pairs": len(values), "spearman_mean": float(np.mean(values)), "spearman_min": min(values),
            "spearman_max": max(values)}


def subset_robustness(full: pd.DataFrame, subsets: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per region, measure and condition: its full-set "below" calls, the share of subsets where each call holds
    and the subsets' mean score; per region and measure: Spearman of the condition ranking between subsets)."""
    stacked = pd.concat([table.assign(subset=s) for s, table in enumerate(subsets)], ignore_index=True)
    rows, reliability = [], []
    for (region, measure), here in full.groupby(["region", "measure"], sort=False):
        mine = stacked[(stacked.region == region) & (stacked.measure == measure)]
        if mine.empty:
            continue
        for row in here.itertuples():
            per_subset = mine[mine.condition == row.condition]
            out = {"region": region, "measure": measure, "condition": row.condition, "role": row.role,
                   "n_subsets": len(per_subset), "full_mean": row.mean, "subset_mean": per_subset["mean"].mean()}
            for role in (REFERENCE, UNTRAINED):
                column = f"below_{role}"
                if column in full and pd.notna(getattr(row, f"p_vs_{role}", np.nan)):
                    call = bool(getattr(row, column))
                    out[f"{column}_full"] = call
                    out[f"{column}_holds"] = float((per_subset[column].astype(bool) == call).mean())
            rows.append(out)
        rankings = [group.set_index("condition")["mean"] for _, group in mine.groupby("subset")]
        reliability.append({"region": region, "measure": measure, "between": "subsets",
                            "n_conditions": int(here.condition.nunique()), **_spearman_summary(rankings)})
    return pd.DataFrame(rows), pd.DataFrame(reliability)


def seed_ranking_reliability(evaluations: list[Evaluation]) -> pd.DataFrame:
    """Per region: Spearman of the condition ranking (raw score, mean over subjects) between training seeds,
    over the conditions evaluated at both seeds of a pair."""
    rows = []
    scores = pd.concat([e.results[e.results.metric == "score"].assign(condition=e.condition, seed=e.seed)
                        for e in evaluations], ignore_index=True)
    for region, here in scores.groupby("region", sort=False):
        means = here.groupby(["seed", "condition"]).value.mean()
        rankings = [means.loc[seed] for seed in means.index.get_level_values("seed").unique()]
        rows.append({"region": region, "measure": "raw", "between": "seeds",
                     "n_conditions": int(here.condition.nunique()), **_spearman_summary(rankings)})
    return pd.DataFrame(rows)


def run_controls(evaluations: list[Evaluation], table: pd.DataFrame, analysis: str, config: ControlsConfig,
                 statistics: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The control tables of one comparison (``statistics``: compare_conditions' unit, n_draws, seed, ci_level,
    alpha): ``reconstruction`` and ``robustness`` (RSA only), ``ranking_reliability`` (between subsets and seeds)."""
    from tqdm.auto import tqdm

    out = {"ranking_reliability": seed_ranking_reliability(evaluations)}
    wanted_reconstruction = bool(config.reconstruction_components)
    if analysis != "rsa" or not (wanted_reconstruction or config.n_subsets):
        return out
    components = sorted(set(config.reconstruction_components))
    reconstructions, subset_sets = [], [[] for _ in range(config.n_subsets)]
    for evaluation in tqdm(evaluations, desc="compare controls", unit="network", disable=not config.progress):
        reference = wanted_reconstruction and evaluation.info.get("role") == REFERENCE
        if not (reference or config.n_subsets):
            continue  # only the reference networks are re-opened for the reconstruction alone
        recon_scores, recon_draws = {m: {} for m in components}, {m: {} for m in components}
        scores, draws = [{} for _ in subset_sets], [{} for _ in subset_sets]
        for test in pair_tests(evaluation, config.device):
            key = (test.subject, test.region)
            if reference:
                values, resampled = reconstruction_scores(test, components)
                for index, m in enumerate(components):
                    recon_scores[m][key], recon_draws[m][key] = float(values[index]), resampled[:, index]
            if config.n_subsets:
                values, resampled = subset_scores(test, config)
                for s in range(config.n_subsets):
                    scores[s][key], draws[s][key] = float(values[s]), resampled[s]
        if reference:
            info = {**evaluation.info, "role": "condition", "label_source": "reconstruction", "K": None}
            reconstructions += [_scored(evaluation, f"{evaluation.condition} PCA M={m}", {**info, "components": m},
                                        recon_scores[m], recon_draws[m]) for m in components]
        for s, collected in enumerate(subset_sets):
            collected.append((evaluation, scores[s], draws[s]))
    if reconstructions:
        references = [e for e in evaluations if e.info.get("role") == REFERENCE]
        out["reconstruction"] = compare_conditions(references + reconstructions, **statistics)
    if config.n_subsets:
        tables = [compare_conditions(subset_evaluations(collected, s, config), **statistics)
                  for s, collected in enumerate(subset_sets)]
        out["robustness"], between_subsets = subset_robustness(table, tables)
        out["ranking_reliability"] = pd.concat([between_subsets, out["ranking_reliability"]], ignore_index=True)
    return out
