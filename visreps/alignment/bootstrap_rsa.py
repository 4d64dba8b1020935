"""Bootstrap CIs and paired comparisons for RSA scores, computed for all resamples at once.

A resample keeps a subset of stimuli (see ``bootstrap.Resampling``); its score compares the two sub-RDMs'
strict upper triangles. With replacement, entry (i, j) of a resample where stimulus i was drawn c_i times
and j c_j times appears c_i·c_j times, and the c(c−1)/2 self-pairs of a duplicated stimulus (zero distances
that measure nothing) are dropped — exactly what the straightforward loop in ``reference_loops`` does.

Backends: Spearman and Kendall use the compiled kernels of ``_rank_kernels`` on CPU (``backend="numba"``),
which sort each RDM once and rank every resample in one pass; ``backend="torch"`` computes Spearman with
batched cumulative sums on any device (use it on a GPU); Kendall without numba falls back to the SciPy loop.
Pearson always uses batched quadratic forms (counts @ upper triangle) in float64. All backends equal the
loop over iterations with SciPy to ~1e-12.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from visreps.alignment import _rank_kernels as kernels
from visreps.alignment.bootstrap import (
    DEFAULT_CI_LEVEL,
    DEFAULT_ITERATIONS,
    BootstrapResult,
    PairedComparison,
    Resampling,
    make_result,
    paired_difference,
)
from visreps.alignment.compare import check_compare_method, compare_rdms, upper_triangle
from visreps.alignment.reference_loops import rsa_resample_scores_loop
from visreps.alignment.validation import AlignmentInputError, check_rdm, resolve_device

BACKENDS = ("auto", "numba", "torch", "loop")
#: bytes of working memory per batch of resamples for the torch backends
TORCH_BATCH_BYTES = 256 * 2**20


def _check_rdms(model_rdms: Sequence[Any], neural_rdm: Any, device: torch.device
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
    neural = check_rdm(neural_rdm, "neural RDM", device=device)
    models = []
    for index, rdm in enumerate(model_rdms):
        model = check_rdm(rdm, f"model RDM {index}", device=device)
        if model.shape != neural.shape:
            raise AlignmentInputError(
                f"model RDM {index} has shape {tuple(model.shape)} but the neural RDM {tuple(neural.shape)}; "
                "both must cover the same stimuli in the same order"
            )
        models.append(model)
    return models, neural


def _resolve_backend(backend: str, method: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise AlignmentInputError(f"unknown bootstrap backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "numba" and not kernels.HAVE_NUMBA:
        raise AlignmentInputError("backend='numba' needs the numba package (pip install numba)")
    if method == "pearson" and backend != "loop":
        return "torch"
    if backend != "auto":
        return backend
    if device.type == "cpu" and kernels.HAVE_NUMBA:
        return "numba"
    return "torch" if method == "spearman" else "loop"


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.triu_indices(n, k=1)
    return rows.astype(np.int64), cols.astype(np.int64)


def _numba_scores(models: list[np.ndarray], neural: np.ndarray, counts: np.ndarray, method: str) -> np.ndarray:
    rows, cols = _pairs(counts.shape[1])
    blocks = kernels.thread_blocks(counts.shape[0])
    if method == "spearman":
        ref = kernels.sorted_layout(neural, rows, cols)
        position_of = np.empty(neural.size, dtype=np.int64)
        position_of[ref["order"]] = np.arange(neural.size)
        layouts = [kernels.sorted_layout(model, rows, cols) for model in models]
        inverse = []
        for layout in layouts:  # where each reference-order entry sits in this model's order
            model_position = np.empty(neural.size, dtype=np.int32)
            model_position[position_of[layout["order"]]] = np.arange(neural.size, dtype=np.int32)
            inverse.append(model_position)
        return kernels.spearman_resamples(
            counts, ref["rows"], ref["cols"], ref["group_end"], ref["ties"],
            np.stack([lay["rows"] for lay in layouts]), np.stack([lay["cols"] for lay in layouts]),
            np.stack([lay["group_end"] for lay in layouts]), np.array([lay["ties"] for lay in layouts]),
            np.stack(inverse),
            np.empty((blocks, 2, neural.size), dtype=kernels.rank_dtype(int(counts.sum(axis=1).max()))))
    _, neural_rank = np.unique(neural, return_inverse=True)
    neural_rank = (neural_rank + 1).astype(np.int32)
    layouts = [kernels.sorted_layout(model, rows, cols, tiebreak=neural) for model in models]
    return kernels.kendall_resamples(
        counts, np.stack([lay["rows"] for lay in layouts]), np.stack([lay["cols"] for lay in layouts]),
        np.stack([lay["group_end"] for lay in layouts]),
        np.stack([neural_rank[lay["order"]] for lay in layouts]), int(neural_rank.max()), blocks)


def _torch_rank_layout(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> dict[str, Any]:
    order = torch.argsort(values, stable=True)
    ordered = values[order]
    m = values.numel()
    new_group = torch.ones(m, dtype=torch.bool, device=values.device)
    new_group[1:] = ordered[1:] != ordered[:-1]
    group = torch.cumsum(new_group.long(), 0) - 1
    starts = torch.nonzero(new_group).flatten()
    ends = torch.cat([starts[1:] - 1, torch.tensor([m - 1], device=values.device)])
    return {"order": order, "rows": rows[order], "cols": cols[order], "ties": bool(starts.numel() < m),
            "start": starts[group], "end": ends[group]}


def _torch_doubled_ranks(counts_t: torch.Tensor, layout: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, doubled average ranks), entries (in the layout's sorted order) × resamples, float64.

    ``counts_t`` is stimuli × resamples; entry-major tensors make every gather a copy of whole rows and
    the cumulative sum run along contiguous columns.
    """
    weights = counts_t.index_select(0, layout["rows"]).mul_(counts_t.index_select(0, layout["cols"]))
    cumulative = torch.cumsum(weights, dim=0)
    if not layout["ties"]:  # each entry is its own group: 2·(weight before) + w + 1 = 2·cumulative − w + 1
        return weights, cumulative.mul_(2).sub_(weights).add_(1)
    before = cumulative.sub(weights)
    group_weight = cumulative.index_select(0, layout["end"]).sub_(before.index_select(0, layout["start"]))
    return weights, before.index_select(0, layout["start"]).mul_(2).add_(group_weight).add_(1)


def _torch_spearman_scores(models: list[torch.Tensor], neural: torch.Tensor, counts: np.ndarray) -> np.ndarray:
    device = neural.device
    rows, cols = (torch.from_numpy(a).to(device) for a in _pairs(counts.shape[1]))
    ref = _torch_rank_layout(neural, rows, cols)
    position_of = torch.empty_like(ref["order"])
    position_of[ref["order"]] = torch.arange(neural.numel(), device=device)
    layouts = [_torch_rank_layout(model, rows, cols) for model in models]
    positions = [position_of[lay["order"]] for lay in layouts]
    batch = max(1, TORCH_BATCH_BYTES // (neural.numel() * 8 * 6))
    out = np.empty((counts.shape[0], len(models)))
    for start in range(0, counts.shape[0], batch):
        c = torch.from_numpy(counts[start:start + batch].T.copy()).to(device=device, dtype=torch.float64)
        w_ref, x_ref = _torch_doubled_ranks(c, ref)
        total = w_ref.sum(dim=0)
        w_ref.mul_(x_ref)
        s1 = w_ref.sum(dim=0)
        var_ref = (w_ref * x_ref).sum(dim=0) - s1 * s1 / total
        del w_ref
        for index, (layout, position) in enumerate(zip(layouts, positions)):
            w, x = _torch_doubled_ranks(c, layout)
            wx = w.mul_(x)
            sa = wx.sum(dim=0)
            var_model = (wx * x).sum(dim=0) - sa * sa / total
            sab = (wx.mul_(x_ref.index_select(0, position))).sum(dim=0)
            out[start:start + batch, index] = ((sab - sa * s1 / total) / torch.sqrt(var_model * var_ref)).cpu().numpy()
    return out


def _torch_pearson_scores(models: list[torch.Tensor], neural: torch.Tensor, counts: np.ndarray) -> np.ndarray:
    """Σ_{i<j} c_i c_j f_ij for all moments f at once as quadratic forms c^T U_f c (float64)."""
    device = neural.device
    c_all = torch.from_numpy(counts).to(device=device, dtype=torch.float64)

    def upper(matrix: torch.Tensor) -> torch.Tensor:
        return torch.triu(matrix, diagonal=1)

    def pair_sums(matrix: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return ((c @ upper(matrix)) * c).sum(dim=1)

    b = neural - upper_triangle(neural).mean()
    n_pairs = (c_all.sum(dim=1) ** 2 - (c_all * c_all).sum(dim=1)) / 2.0
    sb, sbb = pair_sums(b, c_all), pair_sums(b * b, c_all)
    var_b = sbb - sb * sb / n_pairs
    out = np.empty((counts.shape[0], len(models)))
    for index, model in enumerate(models):
        a = model - upper_triangle(model).mean()
        sa, saa, sab = pair_sums(a, c_all), pair_sums(a * a, c_all), pair_sums(a * b, c_all)
        out[:, index] = ((sab - sa * sb / n_pairs) / torch.sqrt((saa - sa * sa / n_pairs) * var_b)).cpu().numpy()
    return out


def rsa_resample_scores(model_rdms: Sequence[Any], neural_rdm: Any, counts: np.ndarray, *,
                        method: str = "spearman", backend: str = "auto",
                        device: str | torch.device | None = None) -> np.ndarray:
    """Scores (n_resamples × n_models) of each model RDM vs the neural RDM on each resample.

    ``counts`` is (n_resamples × n_stimuli) integer: how often each stimulus is drawn (see Resampling.counts).
    """
    method = check_compare_method(method)
    device = resolve_device(device, neural_rdm)
    models, neural = _check_rdms(model_rdms, neural_rdm, device)
    counts = np.ascontiguousarray(counts, dtype=np.int32)
    if counts.ndim != 2 or counts.shape[1] != neural.shape[0]:
        raise AlignmentInputError(
            f"counts must be (n_resamples, {neural.shape[0]}), got shape {counts.shape}"
        )
    backend = _resolve_backend(backend, method, device)
    if backend == "loop":
        return rsa_resample_scores_loop([m.cpu().numpy() for m in models], neural.cpu().numpy(), counts, method)
    if backend == "numba":
        return _numba_scores([upper_triangle(m).cpu().numpy() for m in models],
                             upper_triangle(neural).cpu().numpy(), counts, method)
    if method == "pearson":
        return _torch_pearson_scores(models, neural, counts)
    if method == "kendall":
        raise AlignmentInputError("Kendall τ-a has no torch backend; use backend='numba' or 'loop'")
    return _torch_spearman_scores([upper_triangle(m) for m in models], upper_triangle(neural), counts)


def bootstrap_rsa_models(model_rdms: Mapping[str, Any], neural_rdm: Any, *, method: str = "spearman",
                         n_iterations: int = DEFAULT_ITERATIONS, fraction: float | None = None,
                         replace: bool = False, ci_level: float = DEFAULT_CI_LEVEL, seed: int = 0,
                         backend: str = "auto", device: str | torch.device | None = None
                         ) -> dict[str, BootstrapResult]:
    """Bootstrap every model RDM against one neural RDM with the same resamples (so results can be paired)."""
    if not model_rdms:
        raise AlignmentInputError("no model RDMs given")
    names = list(model_rdms)
    device = resolve_device(device, neural_rdm)
    models, neural = _check_rdms([model_rdms[name] for name in names], neural_rdm, device)
    resampling = Resampling(neural.shape[0], n_iterations, fraction, replace, seed)
    scores = rsa_resample_scores(models, neural, resampling.counts(), method=method, backend=backend,
                                 device=device)
    return {
        name: make_result(compare_rdms(model, neural, method), scores[:, index], ci_level, resampling,
                          f"the RSA score of {name!r}", method=method)
        for index, (name, model) in enumerate(zip(names, models))
    }


def bootstrap_rsa(model_rdm: Any, neural_rdm: Any, *, method: str = "spearman",
                  n_iterations: int = DEFAULT_ITERATIONS, fraction: float | None = None, replace: bool = False,
                  ci_level: float = DEFAULT_CI_LEVEL, seed: int = 0, backend: str = "auto",
                  device: str | torch.device | None = None) -> BootstrapResult:
    """RSA score of a model RDM vs a neural RDM (``method``: spearman, kendall, pearson) with bootstrap CI."""
    return bootstrap_rsa_models({"model": model_rdm}, neural_rdm, method=method, n_iterations=n_iterations,
                                fraction=fraction, replace=replace, ci_level=ci_level, seed=seed,
                                backend=backend, device=device)["model"]


def paired_bootstrap_rsa(model_rdm_a: Any, model_rdm_b: Any, neural_rdm: Any, *, method: str = "spearman",
                         n_iterations: int = DEFAULT_ITERATIONS, fraction: float | None = None,
                         replace: bool = False, ci_level: float = DEFAULT_CI_LEVEL, seed: int = 0,
                         backend: str = "auto", device: str | torch.device | None = None) -> PairedComparison:
    """Score(A) − score(B) against the same neural RDM on the same resamples: difference, CI, p-value."""
    results = bootstrap_rsa_models({"a": model_rdm_a, "b": model_rdm_b}, neural_rdm, method=method,
                                   n_iterations=n_iterations, fraction=fraction, replace=replace,
                                   ci_level=ci_level, seed=seed, backend=backend, device=device)
    return paired_difference(results["a"], results["b"])
