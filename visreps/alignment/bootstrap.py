"""The bootstrap scheme shared by RSA and encoding, its results, the encoding bootstrap, paired comparisons.

Scheme (the study's): ``n_iterations`` = 1,000 resamples, each keeping a random ``fraction`` = 90 % of the
test stimuli *without* replacement, drawn from ``numpy.random.default_rng(seed)``: for iteration i the kept
stimuli are the first k = round(fraction·n) entries of ``argsort(rng.random((n_iterations, n))[i])``, sorted.
The classical bootstrap (``replace=True``, fraction 1 unless given) draws ``rng.integers(0, n, (n_iterations, k))``;
a stimulus drawn twice counts twice (for RSA its self-pair, a zero distance, is left out, see bootstrap_rsa).
The CI is the percentile interval of the resampled scores (``numpy.percentile``, linear interpolation); the
point estimate is the score on all stimuli. The same ``Resampling`` (same n, settings and seed) gives the same
indices to every model, which is what makes paired comparisons valid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from visreps.alignment.validation import (
    MIN_STIMULI,
    AlignmentInputError,
    check_fraction,
    check_matrix,
    check_no_constant_columns,
    check_same_stimuli,
    resolve_device,
)

DEFAULT_ITERATIONS = 1000
DEFAULT_FRACTION = 0.9
DEFAULT_CI_LEVEL = 0.95


@dataclass(frozen=True)
class Resampling:
    """Which stimuli each bootstrap iteration keeps (see the module docstring for the exact rule)."""

    n_stimuli: int
    n_iterations: int = DEFAULT_ITERATIONS
    fraction: float | None = None
    replace: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_iterations < 1:
            raise AlignmentInputError(f"n_iterations must be ≥ 1, got {self.n_iterations}")
        fraction = self.fraction if self.fraction is not None else (1.0 if self.replace else DEFAULT_FRACTION)
        object.__setattr__(self, "fraction", check_fraction(fraction, "bootstrap fraction"))
        if self.sample_size < MIN_STIMULI:
            raise AlignmentInputError(
                f"a bootstrap sample of {self.fraction:.0%} of {self.n_stimuli} stimuli keeps {self.sample_size}; "
                f"at least {MIN_STIMULI} are needed"
            )

    @property
    def sample_size(self) -> int:
        """Stimuli drawn per iteration, k = round(fraction · n_stimuli)."""
        return int(round(float(self.fraction) * self.n_stimuli))

    def indices(self) -> np.ndarray:
        """(n_iterations, k) int64 stimulus indices; sorted rows when drawn without replacement."""
        rng = np.random.default_rng(self.seed)
        if self.replace:
            return rng.integers(0, self.n_stimuli, size=(self.n_iterations, self.sample_size))
        keys = rng.random((self.n_iterations, self.n_stimuli))
        return np.sort(np.argsort(keys, axis=1, kind="stable")[:, : self.sample_size], axis=1)

    def counts(self) -> np.ndarray:
        """(n_iterations, n_stimuli) int32: how often each stimulus is in each iteration's sample."""
        indices = self.indices()
        counts = np.zeros((self.n_iterations, self.n_stimuli), dtype=np.int32)
        np.add.at(counts, (np.arange(self.n_iterations)[:, None], indices), 1)
        return counts


@dataclass
class BootstrapResult:
    """A score on all stimuli, its percentile CI and the full resampled distribution (n_iterations,)."""

    estimate: float
    ci_low: float
    ci_high: float
    distribution: np.ndarray
    ci_level: float
    resampling: Resampling
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, with_distribution: bool = False) -> dict[str, Any]:
        out = {"estimate": self.estimate, "ci_low": self.ci_low, "ci_high": self.ci_high,
               "ci_level": self.ci_level, **{f"bootstrap_{k}": v for k, v in asdict(self.resampling).items()}}
        if with_distribution:
            out["distribution"] = self.distribution.tolist()
        return out


def percentile_interval(distribution: np.ndarray, ci_level: float) -> tuple[float, float]:
    """(low, high) percentiles enclosing ``ci_level`` of ``distribution`` (e.g. 2.5th and 97.5th for 0.95)."""
    ci_level = check_fraction(ci_level, "ci_level")
    tail = 100.0 * (1.0 - ci_level) / 2.0
    low, high = np.percentile(distribution, [tail, 100.0 - tail])
    return float(low), float(high)


def make_result(estimate: float, distribution: np.ndarray, ci_level: float, resampling: Resampling,
                what: str, **extras: Any) -> BootstrapResult:
    """Assemble a BootstrapResult, refusing NaN/inf anywhere in the distribution."""
    distribution = np.asarray(distribution, dtype=np.float64)
    if not np.isfinite(estimate) or not np.isfinite(distribution).all():
        bad = int(np.flatnonzero(~np.isfinite(distribution))[0]) if not np.isfinite(distribution).all() else -1
        raise AlignmentInputError(
            f"{what} is undefined (NaN) {'on all stimuli' if bad < 0 else f'in bootstrap iteration {bad}'}: "
            "some resampled responses or predictions are constant; use more stimuli or drop constant units"
        )
    low, high = percentile_interval(distribution, ci_level)
    return BootstrapResult(float(estimate), low, high, distribution, float(ci_level), resampling, dict(extras))


def pearson_columns(predictions: Any, responses: Any) -> torch.Tensor:
    """Pearson r per column (target) between two stimuli × targets arrays, float64 tensor (targets,)."""
    p = torch.as_tensor(predictions).double()
    y = torch.as_tensor(responses).double().to(p.device)
    p = p - p.mean(dim=0)
    y = y - y.mean(dim=0)
    return (p * y).sum(dim=0) / torch.sqrt((p * p).sum(dim=0) * (y * y).sum(dim=0))


def _r_or_zero(covariance: torch.Tensor, variance_product: torch.Tensor) -> torch.Tensor:
    """covariance / sqrt(variance product); 0 where the product is 0 (a constant prediction explains nothing)."""
    positive = variance_product > 0
    return torch.where(positive, covariance / torch.sqrt(torch.where(positive, variance_product, 1.0)), 0.0)


def bootstrap_encoding(predictions: Any, responses: Any, *, n_iterations: int = DEFAULT_ITERATIONS,
                       fraction: float | None = None, replace: bool = False, ci_level: float = DEFAULT_CI_LEVEL,
                       seed: int = 0, device: str | torch.device | None = None,
                       target_batch: int = 2048) -> BootstrapResult:
    """Bootstrap CI of the encoding score (mean Pearson r over targets) from cached test predictions.

    ``predictions`` and ``responses`` are stimuli × targets. No refit: each iteration re-correlates the kept
    rows. All iterations are computed at once per batch of targets from five weighted moments
    (counts @ [y, p, y², p², y·p], float64, after centring each column on all stimuli), which equals the
    per-iteration loop to ~1e-14. ``extras["per_target_r"]`` holds the per-target r on all stimuli. A target
    whose predictions are constant (ridge chose an infinite-like alpha: nothing predictable) has r = 0.
    """
    p = check_matrix(predictions, "predictions", device=resolve_device(device, predictions))
    y = check_matrix(responses, "responses", device=p.device)
    check_same_stimuli(p, y, "predictions", "responses")
    if p.shape != y.shape:
        raise AlignmentInputError(f"predictions {tuple(p.shape)} and responses {tuple(y.shape)} differ in shape")
    check_no_constant_columns(y, "responses")  # a constant prediction (alpha -> inf) scores r = 0, below
    resampling = Resampling(p.shape[0], n_iterations, fraction, replace, seed)
    weights = torch.from_numpy(resampling.counts()).to(device=p.device, dtype=torch.float64)
    n_kept = weights.sum(dim=1, keepdim=True)
    per_target = torch.empty(p.shape[1], dtype=torch.float64, device=p.device)
    total = torch.zeros(n_iterations, dtype=torch.float64, device=p.device)
    for start in range(0, p.shape[1], target_batch):  # float64 copies of one batch of targets at a time
        pb = p[:, start:start + target_batch].double()
        yb = y[:, start:start + target_batch].double()
        pb -= pb.mean(dim=0)
        yb -= yb.mean(dim=0)
        moments = weights @ torch.cat([yb, pb, yb * yb, pb * pb, yb * pb], dim=1)
        sy, sp, syy, spp, syp = moments.chunk(5, dim=1)
        per_target[start:start + target_batch] = _r_or_zero((yb * pb).sum(dim=0), (yb * yb).sum(dim=0) * (pb * pb).sum(dim=0))
        covariance = syp - sy * sp / n_kept
        variance = (syy - sy * sy / n_kept) * (spp - sp * sp / n_kept)
        total += _r_or_zero(covariance, variance).sum(dim=1)
    distribution = (total / p.shape[1]).cpu().numpy()
    return make_result(float(per_target.mean()), distribution, ci_level, resampling, "the encoding score",
                       per_target_r=per_target.cpu().numpy())


@dataclass
class PairedComparison:
    """Score A − score B on the same resamples: the difference, its CI, a two-sided p-value, the distribution."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    distribution: np.ndarray
    ci_level: float

    def to_dict(self) -> dict[str, float]:
        return {"difference": self.difference, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "p_value": self.p_value, "ci_level": self.ci_level}


def paired_difference(result_a: BootstrapResult, result_b: BootstrapResult,
                      ci_level: float | None = None) -> PairedComparison:
    """Compare two bootstrap results that used the same resampling (same stimuli, settings and seed).

    p-value (two-sided, with the +1 correction so it is never 0):
    min(1, 2·(1 + min(#{d ≤ 0}, #{d ≥ 0})) / (n_iterations + 1)) for the resampled differences d.
    """
    if result_a.resampling != result_b.resampling:
        raise AlignmentInputError(
            "paired comparison needs both scores bootstrapped with the same resampling; got "
            f"{result_a.resampling} and {result_b.resampling}"
        )
    level = result_a.ci_level if ci_level is None else ci_level
    return difference_test(result_a.estimate - result_b.estimate, result_a.distribution - result_b.distribution,
                           level)


def difference_test(difference: float, draws: Any, ci_level: float = DEFAULT_CI_LEVEL) -> PairedComparison:
    """A difference, the percentile CI of its resampled ``draws`` (n,) and the two-sided p-value
    min(1, 2·(1 + min(#{d ≤ 0}, #{d ≥ 0})) / (n + 1)) of the hypothesis "no difference"."""
    draws = np.asarray(draws, dtype=np.float64).ravel()
    if draws.size < 2 or not np.isfinite(draws).all():
        raise AlignmentInputError(f"a difference test needs ≥ 2 finite resampled differences, got {draws.size}")
    low, high = percentile_interval(draws, ci_level)
    extreme = min(int((draws <= 0).sum()), int((draws >= 0).sum()))
    p_value = min(1.0, 2.0 * (1 + extreme) / (draws.size + 1))
    return PairedComparison(float(difference), low, high, p_value, draws, float(ci_level))


def benjamini_hochberg(p_values: Any, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini–Hochberg FDR control: (rejected at level ``alpha``, BH-adjusted p-values), input order."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise AlignmentInputError(f"p_values must be a non-empty 1-D array, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise AlignmentInputError("p_values must all lie in [0, 1] (no NaN)")
    order = np.argsort(p)
    scaled = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted_sorted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    adjusted = np.empty_like(adjusted_sorted)
    adjusted[order] = adjusted_sorted
    return adjusted <= alpha, adjusted
