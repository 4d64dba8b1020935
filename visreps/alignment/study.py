"""Study-level statistics over many evaluations: from per-subject resamples to condition means with CIs,
paired differences to a reference condition and rank intervals (method: docs/method.md §11).

Inputs per condition c (e.g. K = 8 from pixel PCA labels): ``estimates[c]`` (subjects × seeds) — each training
seed's score on all test stimuli of each subject — and ``draws[c]`` (subjects × seeds × resamples), resample r of
a subject keeping the same stimuli for every condition and seed (the evaluations used the same test stimuli and
bootstrap settings). Subjects are in the same order for every condition; conditions may have different numbers
of seeds. A draw b of the study mean is built by one of three resampling units, the same draw b for every
condition, so that differences and ranks of draw b are paired:

- ``stimuli``: resample b of every subject, averaged over subjects and seeds (subjects and seeds fixed);
- ``subjects``: subjects drawn with replacement, their all-stimuli scores averaged over seeds;
- ``hierarchical``: subjects drawn with replacement, each drawn subject with a random one of its stimulus
  resamples, and each condition's seeds drawn with replacement (independently per condition: seed s of one
  condition is not related to seed s of another).

``sampling_draws`` turns a resample distribution into an estimate of the score's sampling distribution first:
the study's resamples keep 90 % of the stimuli *without* replacement, whose spread is only
√((n − k)/k) ≈ 1/3 of the sampling spread of a score on n stimuli (finite-population correction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from visreps.alignment.bootstrap import PairedComparison, difference_test
from visreps.alignment.validation import AlignmentInputError

RESAMPLING_UNITS = ("stimuli", "subjects", "hierarchical")
#: with fewer subjects a subject bootstrap has too few distinct draws (and no claim about a population):
#: ``default_resampling_unit`` then keeps subjects fixed and resamples stimuli
MIN_SUBJECTS_RESAMPLED = 5


def sampling_scale(n_stimuli: int, sample_size: int, replace: bool) -> float:
    """Factor that turns the spread of scores on resamples of ``sample_size`` of ``n_stimuli`` stimuli into
    the spread of a score on all ``n_stimuli``: √(k/(n − k)) without replacement, √(k/n) with replacement."""
    n, k = int(n_stimuli), int(sample_size)
    if n < 2 or k < 1 or (not replace and k > n):
        raise AlignmentInputError(f"sample size {k} is impossible for {n} stimuli (replace={replace})")
    if not replace and k == n:
        raise AlignmentInputError(
            f"resamples keep all {n} stimuli without replacement: they do not vary, so no interval or test can be "
            "derived; evaluate with bootstrap_fraction < 1 or bootstrap_replace=true")
    return float(np.sqrt(k / n) if replace else np.sqrt(k / (n - k)))


def sampling_draws(distribution: Any, estimate: float, n_stimuli: int, sample_size: int, replace: bool) -> np.ndarray:
    """Resampled scores (..., resamples) as draws of the all-stimuli score: the classical bootstrap (k = n, with
    replacement) unchanged, otherwise ``estimate + scale · (score − mean over resamples)``."""
    values = np.asarray(distribution, dtype=np.float64)
    scale = sampling_scale(n_stimuli, sample_size, replace)
    if replace and sample_size == n_stimuli:
        return values.copy()
    return np.asarray(estimate, dtype=np.float64)[..., None] + scale * (values - values.mean(axis=-1, keepdims=True))


def default_resampling_unit(n_subjects: int) -> str:
    """``hierarchical`` from MIN_SUBJECTS_RESAMPLED subjects on (NSD's 8), else ``stimuli`` (TVSD's 2 monkeys,
    THINGS' one group, the demo's subjects): then the conclusions are about these subjects."""
    return "hierarchical" if n_subjects >= MIN_SUBJECTS_RESAMPLED else "stimuli"


@dataclass
class DrawIndices:
    """Which subject, stimulus resample and seeds each study-level draw b uses (see the module docstring).

    ``subjects`` and ``resamples``: (draws, subjects) integer arrays (``resamples`` None for unit "subjects");
    ``seeds``: per condition a (draws, seeds of that condition) array, or None when seeds are averaged.
    """

    unit: str
    subjects: np.ndarray
    resamples: np.ndarray | None
    seeds: list[np.ndarray] | None


def draw_indices(unit: str, n_subjects: int, n_resamples: int, seeds_per_condition: Sequence[int],
                 n_draws: int = 1000, seed: int = 0) -> DrawIndices:
    """Seeded indices of ``n_draws`` study-level draws (unit "stimuli": one draw per stimulus resample)."""
    if unit not in RESAMPLING_UNITS:
        raise AlignmentInputError(f"unknown resampling unit {unit!r}; choose one of {', '.join(RESAMPLING_UNITS)}")
    if n_subjects < 1 or n_resamples < 1 or min(seeds_per_condition, default=0) < 1:
        raise AlignmentInputError("every condition needs at least one subject, resample and seed")
    if unit == "stimuli":
        return DrawIndices(unit, np.tile(np.arange(n_subjects), (n_resamples, 1)),
                           np.repeat(np.arange(n_resamples)[:, None], n_subjects, axis=1), None)
    if n_subjects < 2:
        raise AlignmentInputError(f"resampling unit {unit!r} needs at least 2 subjects, got {n_subjects}; "
                                  "use resampling=stimuli")
    rng = np.random.default_rng(seed)
    subjects = rng.integers(0, n_subjects, size=(n_draws, n_subjects))
    if unit == "subjects":
        return DrawIndices(unit, subjects, None, None)
    resamples = rng.integers(0, n_resamples, size=(n_draws, n_subjects))
    seeds = [rng.integers(0, count, size=(n_draws, count)) for count in seeds_per_condition]
    return DrawIndices(unit, subjects, resamples, seeds)


def _check(estimates: Sequence[Any], draws: Sequence[Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    est = [np.asarray(e, dtype=np.float64) for e in estimates]
    dr = [np.asarray(d, dtype=np.float64) for d in draws]
    if not est or len(est) != len(dr):
        raise AlignmentInputError("give estimates and draws for the same (≥ 1) conditions")
    shape = (est[0].shape[0], dr[0].shape[-1])
    for index, (e, d) in enumerate(zip(est, dr)):
        if e.ndim != 2 or d.shape != (*e.shape, shape[1]) or e.shape[0] != shape[0]:
            raise AlignmentInputError(
                f"condition {index}: estimates must be subjects × seeds and draws subjects × seeds × resamples with "
                f"{shape[0]} subjects and {shape[1]} resamples like condition 0; got {e.shape} and {d.shape}")
        if not (np.isfinite(e).all() and np.isfinite(d).all()):
            raise AlignmentInputError(f"condition {index} has NaN or infinite scores")
    return est, dr


def study_draws(estimates: Sequence[Any], draws: Sequence[Any], indices: DrawIndices) -> tuple[np.ndarray, np.ndarray]:
    """(point, draws): per condition the mean over subjects and seeds (conditions,) and its study-level
    draws (conditions × n_draws) built from ``indices``."""
    est, dr = _check(estimates, draws)
    point = np.array([e.mean() for e in est])
    rows = []
    for c, (e, d) in enumerate(zip(est, dr)):
        if indices.unit == "stimuli":
            rows.append(d.mean(axis=(0, 1))[indices.resamples[:, 0]])
        elif indices.unit == "subjects":
            rows.append(e.mean(axis=1)[indices.subjects].mean(axis=1))
        else:
            picked = d[indices.subjects[:, :, None], indices.seeds[c][:, None, :], indices.resamples[:, :, None]]
            rows.append(picked.mean(axis=(1, 2)))
    return point, np.stack(rows)


def differences_to(point: np.ndarray, draws: np.ndarray, reference: int, ci_level: float = 0.95
                   ) -> list[PairedComparison | None]:
    """Per condition: its paired difference to condition ``reference`` on the same draws (None for itself)."""
    return [None if c == reference else
            difference_test(point[c] - point[reference], draws[c] - draws[reference], ci_level)
            for c in range(point.size)]
