"""The numbers of a comparison of conditions, from the tables evaluation parent runs log (docs/evaluation.md):
per region and measure (raw or ceiling-normalised score), each condition's mean over subjects and seeds with a
CI, its rank with a rank interval, and its paired difference to the reference (and to the untrained networks)
with a p-value; Benjamini–Hochberg q-values over every difference of one call, per measure. Method:
docs/method.md §7. Pure: DataFrames in, DataFrames out (the compare stage reads and logs them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from visreps.alignment import (
    Resampling, benjamini_hochberg, default_resampling_unit, differences_to, draw_indices, percentile_interval,
    rank_intervals, sampling_draws, study_draws,
)
from visreps.errors import VisrepsError

MEASURES = ("raw", "normalised")
REFERENCE, UNTRAINED = "reference", "untrained"


class ComparisonError(VisrepsError, ValueError):
    """The evaluations cannot be compared as asked; the message names the runs at fault and the fix."""


@dataclass
class Evaluation:
    """One evaluation parent run: its condition, training seed and tables (results, pairs, bootstrap)."""

    run_id: str
    condition: str
    seed: str
    results: pd.DataFrame  # tidy: subject, region, metric, value
    pairs: pd.DataFrame  # subject, region, test_stimuli_fingerprint, n_test_stimuli, resampling settings
    bootstrap: pd.DataFrame  # subject, region, iteration, score
    info: dict[str, object] = field(default_factory=dict)  # label_source, K, architecture, role


def check_pairable(evaluations: list[Evaluation]) -> None:
    """ComparisonError unless every evaluation has the same (subject, region) pairs, test stimuli and resampling."""
    settings = ["test_stimuli_fingerprint", "n_bootstrap", "bootstrap_fraction", "bootstrap_replace", "bootstrap_seed"]
    first = evaluations[0]
    key = first.pairs.set_index(["subject", "region"])[settings].sort_index()
    for evaluation in evaluations[1:]:
        other = evaluation.pairs.set_index(["subject", "region"])[settings].sort_index()
        if list(other.index) != list(key.index):
            raise ComparisonError(
                f"evaluation runs {first.run_id} and {evaluation.run_id} cover different (subject, region) pairs "
                f"({sorted(set(key.index) ^ set(other.index))} differ); compare evaluations of the same subjects and regions")
        differing = [name for name in settings if not (other[name].astype(str) == key[name].astype(str)).all()]
        if differing:
            raise ComparisonError(
                f"evaluation runs {first.run_id} and {evaluation.run_id} differ in {', '.join(differing)}: their "
                "resamples did not keep the same stimuli, so no paired test is possible; evaluate both with the same "
                "dataset split and n_bootstrap/bootstrap_fraction/bootstrap_replace/seed")
    if int(first.pairs.n_bootstrap.iloc[0]) < 2:
        raise ComparisonError(f"evaluation run {first.run_id} has no resamples (n_bootstrap=0); evaluate with "
                              "n_bootstrap ≥ 100 to compare conditions")


def _subject_arrays(evaluation: Evaluation, region: str, subjects: list[str], measure: str
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """(estimates (subjects,), sampling draws (subjects × resamples)) of one seed; None if a ceiling is missing."""
    tidy = evaluation.results[evaluation.results.region == region].pivot_table(
        index="subject", columns="metric", values="value", aggfunc="first")
    pairs = evaluation.pairs[evaluation.pairs.region == region].set_index("subject")
    boot = evaluation.bootstrap[evaluation.bootstrap.region == region]
    estimates, draws = [], []
    for subject in subjects:
        score = float(tidy.loc[subject, "score"])
        resamples = boot[boot.subject == subject].sort_values("iteration").score.to_numpy(dtype=np.float64)
        pair = pairs.loc[subject]
        n, replace = int(pair.n_test_stimuli), str(pair.bootstrap_replace).lower() == "true"
        kept = Resampling(n, int(pair.n_bootstrap), float(pair.bootstrap_fraction), replace).sample_size
        sample = sampling_draws(resamples, score, n, kept, replace)
        if measure == "normalised":
            ceiling = tidy.loc[subject].get("noise_ceiling", np.nan)
            if not np.isfinite(ceiling) or ceiling <= 0:
                return None
            score, sample = score / ceiling, sample / ceiling
        estimates.append(score)
        draws.append(sample)
    return np.array(estimates), np.stack(draws)


def compare_region(evaluations: list[Evaluation], region: str, measure: str, unit: str, n_draws: int,
                   seed: int, ci_level: float) -> pd.DataFrame:
    """Rows per condition of one region and measure (empty when some subject has no noise ceiling)."""
    subjects = sorted(evaluations[0].pairs[evaluations[0].pairs.region == region].subject)
    conditions = list(dict.fromkeys(e.condition for e in evaluations))
    estimates, draws, infos = [], [], []
    for condition in conditions:
        seeds = [e for e in evaluations if e.condition == condition]
        arrays = [_subject_arrays(e, region, subjects, measure) for e in seeds]
        if any(a is None for a in arrays):
            return pd.DataFrame()
        estimates.append(np.stack([a[0] for a in arrays], axis=1))
        draws.append(np.stack([a[1] for a in arrays], axis=1))
        infos.append({**seeds[0].info, "n_seeds": len(seeds), "runs": ",".join(e.run_id for e in seeds)})
    unit = default_resampling_unit(len(subjects)) if unit == "auto" else unit
    indices = draw_indices(unit, len(subjects), draws[0].shape[-1], [e.shape[1] for e in estimates], n_draws, seed)
    point, study = study_draws(estimates, draws, indices)
    ranks = rank_intervals(point, study, ci_level) if len(conditions) > 1 else None
    ceilings = evaluations[0].results.query("region == @region and metric == 'noise_ceiling'").value
    band = (1.0, 1.0) if measure == "normalised" else (ceilings.min(), ceilings.max()) if len(ceilings) else (np.nan,) * 2
    rows = []
    for index, (condition, info) in enumerate(zip(conditions, infos)):
        low, high = percentile_interval(study[index], ci_level)
        rows.append({"region": region, "measure": measure, "condition": condition, **info,
                     "n_subjects": len(subjects), "resampling": unit, "n_draws": study.shape[1], "mean": point[index],
                     "ci_low": low, "ci_high": high, "ci_level": ci_level,
                     "rank": ranks.rank[index] if ranks else 1.0, "rank_ci_low": ranks.ci_low[index] if ranks else 1.0,
                     "rank_ci_high": ranks.ci_high[index] if ranks else 1.0,
                     "ceiling_low": band[0], "ceiling_high": band[1]})
    for role in (REFERENCE, UNTRAINED):
        found = [i for i, info in enumerate(infos) if info.get("role") == role]
        if not found:
            continue
        for index, paired in enumerate(differences_to(point, study, found[0], ci_level)):
            if paired is not None:
                rows[index].update({f"difference_vs_{role}": paired.difference, f"difference_ci_low_vs_{role}": paired.ci_low,
                                    f"difference_ci_high_vs_{role}": paired.ci_high, f"p_vs_{role}": paired.p_value})
    return pd.DataFrame(rows)


def compare_conditions(evaluations: list[Evaluation], unit: str = "auto", n_draws: int = 1000, seed: int = 0,
                       ci_level: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    """The tidy comparison table: a row per region × measure × condition (module docstring), with
    ``q_vs_<role>`` (BH over all rows of a measure, both references together) and ``below_<role>`` (the condition
    is significantly below that reference at q < ``alpha``)."""
    if not any(e.info.get("role") == REFERENCE for e in evaluations):
        raise ComparisonError("no evaluation matches the reference condition; evaluate the reference models (e.g. "
                              "the fine-label networks) or change `reference`")
    check_pairable(evaluations)
    regions = list(dict.fromkeys(evaluations[0].pairs.region))
    table = pd.concat([compare_region(evaluations, region, measure, unit, n_draws, seed, ci_level)
                       for measure in MEASURES for region in regions], ignore_index=True)
    for measure in MEASURES:
        chosen = table.measure == measure
        columns = [f"p_vs_{role}" for role in (REFERENCE, UNTRAINED) if f"p_vs_{role}" in table]
        p_values = table.loc[chosen, columns].to_numpy().ravel()
        present = np.isfinite(p_values)
        if not present.any():
            continue
        q = np.full(p_values.shape, np.nan)
        q[present] = benjamini_hochberg(p_values[present], alpha)[1]
        q = q.reshape(-1, len(columns))
        for index, column in enumerate(columns):
            role = column.removeprefix("p_vs_")
            table.loc[chosen, f"q_vs_{role}"] = q[:, index]
            table.loc[chosen, f"below_{role}"] = (q[:, index] < alpha) & (table.loc[chosen, f"difference_vs_{role}"] < 0)
    return table


def smallest_k_not_below(table: pd.DataFrame) -> pd.DataFrame:
    """Per measure, region and label source: the smallest K not significantly below the reference, its difference
    and q-value (the study's question); no row for a source whose every K is below."""
    rows = []
    coarse = table[(table.role == "condition") & table.K.notna()]
    for (measure, region, source), group in coarse.groupby(["measure", "region", "label_source"], sort=False):
        kept = group[~group["below_reference"].astype(bool)].sort_values("K")
        if len(kept):
            best = kept.iloc[0]
            rows.append({"measure": measure, "region": region, "label_source": source, "smallest_K": int(best.K),
                         "difference_vs_reference": best.difference_vs_reference, "q_vs_reference": best.q_vs_reference})
    return pd.DataFrame(rows)
