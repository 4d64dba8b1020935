"""Comparing two RDMs on their strict upper triangles: Spearman ρ, Kendall τ-a, Pearson r.

Every function takes two square stimuli × stimuli RDMs (numpy or torch, any device), uses only the entries
above the diagonal (row-major, the order of ``scipy.spatial.distance.squareform``) and returns a Python float.
Spearman uses average ranks for ties (equal to ``scipy.stats.spearmanr``). Kendall τ-a is
(concordant − discordant) / (m(m−1)/2) over the m upper-triangle entries, with no tie correction
(rsatoolbox's ``tau-a``). A constant upper triangle raises (the correlation is undefined).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import numpy as np
import scipy.stats
import torch

from visreps.alignment.validation import AlignmentInputError, check_not_constant, check_rdm

CompareMethod = Literal["spearman", "kendall", "pearson"]
COMPARE_METHODS: tuple[str, ...] = ("spearman", "kendall", "pearson")


def upper_triangle(rdm: torch.Tensor) -> torch.Tensor:
    """The strict upper triangle of a square matrix as a vector (row-major), same dtype and device."""
    n = rdm.shape[0]
    rows, cols = torch.triu_indices(n, n, offset=1, device=rdm.device)
    return rdm[rows, cols]


def rank_average(values: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based, float64) along the last dimension, ties given their average rank (scipy's rankdata)."""
    order = torch.argsort(values, dim=-1, stable=True)
    ordered = torch.gather(values, -1, order)
    length = values.shape[-1]
    new_group = torch.ones_like(ordered, dtype=torch.bool)
    new_group[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    group = torch.cumsum(new_group.long(), dim=-1) - 1
    positions = torch.arange(1, length + 1, device=values.device, dtype=torch.float64).expand_as(ordered)
    first = torch.full(ordered.shape, float(length + 1), dtype=torch.float64, device=values.device)
    first = first.scatter_reduce(-1, group, positions, reduce="amin", include_self=True)
    last = torch.zeros(ordered.shape, dtype=torch.float64, device=values.device)
    last = last.scatter_reduce(-1, group, positions, reduce="amax", include_self=True)
    average = (torch.gather(first, -1, group) + torch.gather(last, -1, group)) / 2.0
    ranks = torch.empty_like(average)
    ranks.scatter_(-1, order, average)
    return ranks


def pearson_vectors(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson r between two vectors, in float64."""
    x = x.double() - x.double().mean()
    y = y.double() - y.double().mean()
    return float((x @ y) / torch.sqrt((x @ x) * (y @ y)))


def _vectors(rdm_a: Any, rdm_b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    a = check_rdm(rdm_a, "first RDM")
    b = check_rdm(rdm_b, "second RDM", device=a.device)
    if a.shape != b.shape:
        raise AlignmentInputError(
            f"the RDMs cover different stimuli: shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    va, vb = upper_triangle(a), upper_triangle(b)
    check_not_constant(va, "first RDM's upper triangle")
    check_not_constant(vb, "second RDM's upper triangle")
    return va, vb


def spearman_upper(rdm_a: Any, rdm_b: Any) -> float:
    """Spearman ρ between the strict upper triangles of two RDMs (average ranks for ties)."""
    va, vb = _vectors(rdm_a, rdm_b)
    return pearson_vectors(rank_average(va), rank_average(vb))


def pearson_upper(rdm_a: Any, rdm_b: Any) -> float:
    """Pearson r between the strict upper triangles of two RDMs."""
    va, vb = _vectors(rdm_a, rdm_b)
    return pearson_vectors(va, vb)


def kendall_tau_a_vectors(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall τ-a of two vectors: (concordant − discordant) / (m(m−1)/2).

    Computed in O(m log m) from SciPy's τ-b: S = τ_b · sqrt((n0 − n_x)(n0 − n_y)), with n0 = m(m−1)/2 and
    n_x, n_y the numbers of pairs tied in x and in y.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = x.size
    total = m * (m - 1) / 2.0
    if np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0  # no pair is concordant or discordant (τ-b would be undefined here)
    tau_b = scipy.stats.kendalltau(x, y, variant="b").statistic
    tied_x = _tied_pairs(x)
    tied_y = _tied_pairs(y)
    concordant_minus_discordant = tau_b * np.sqrt((total - tied_x) * (total - tied_y))
    return float(concordant_minus_discordant / total)


def _tied_pairs(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    counts = counts.astype(np.float64)
    return float((counts * (counts - 1) / 2.0).sum())


def kendall_tau_a_upper(rdm_a: Any, rdm_b: Any) -> float:
    """Kendall τ-a between the strict upper triangles of two RDMs."""
    va, vb = _vectors(rdm_a, rdm_b)
    return kendall_tau_a_vectors(va.cpu().numpy(), vb.cpu().numpy())


COMPARE_FUNCTIONS: dict[str, Callable[[Any, Any], float]] = {
    "spearman": spearman_upper,
    "kendall": kendall_tau_a_upper,
    "pearson": pearson_upper,
}


def check_compare_method(method: str) -> str:
    """``method`` if it is one of COMPARE_METHODS, else a clear error."""
    if method not in COMPARE_FUNCTIONS:
        raise AlignmentInputError(
            f"unknown RDM comparison {method!r}; choose one of {', '.join(COMPARE_METHODS)}"
        )
    return method


def compare_vectors(x: Any, y: Any, method: str = "spearman") -> float:
    """``method`` correlation of two equally long vectors (e.g. RDM upper triangles); float64."""
    check_compare_method(method)
    vx = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double().flatten()
    vy = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).double().flatten().to(vx.device)
    if vx.numel() != vy.numel():
        raise AlignmentInputError(f"vectors to compare differ in length: {vx.numel()} and {vy.numel()}")
    check_not_constant(vx, "first vector")
    check_not_constant(vy, "second vector")
    if method == "spearman":
        return pearson_vectors(rank_average(vx), rank_average(vy))
    if method == "kendall":
        return kendall_tau_a_vectors(vx.cpu().numpy(), vy.cpu().numpy())
    return pearson_vectors(vx, vy)


def compare_rdms(rdm_a: Any, rdm_b: Any, method: str = "spearman") -> float:
    """Similarity of two RDMs: ``method`` is "spearman" (default), "kendall" (τ-a) or "pearson"."""
    return COMPARE_FUNCTIONS[check_compare_method(method)](rdm_a, rdm_b)
