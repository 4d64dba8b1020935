"""Compiled (numba) kernels for rank correlations on many resamples of the same RDM pair.

A resample is a vector of stimulus counts c (0/1 without replacement, 0..k with replacement). The entry
(i, j), i < j, of the upper triangle then appears w = c_i·c_j times in the resampled comparison (self-pairs
of a duplicated stimulus are left out: they are zero distances, not data). Every RDM is sorted once; per
resample one sequential pass over the sorted entries yields the weighted average ranks (ties, including the
w copies of one entry, share their mean rank), so a resample costs O(m) instead of a sort. Spearman joins
the two orders by scattering the reference's ranks into the model's order (random writes are cheaper than
random reads here), so both rank passes read memory sequentially; RDMs without ties take plain loops.
Ranks are doubled (2·rank is an integer), sums are taken in float64 over exact integer products, so the
results equal SciPy's to ~1e-11. Kendall τ-a uses a Fenwick tree over the reference ranks (O(m log m) per resample).

Import ``HAVE_NUMBA`` to know whether the kernels are available; callers fall back to torch/SciPy otherwise.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False


def index_dtype(n_stimuli: int) -> type:
    """The narrowest index type for stimulus ids (uint16 halves the memory traffic of the kernels)."""
    return np.uint16 if n_stimuli <= np.iinfo(np.uint16).max else np.int32


def rank_dtype(sample_size: int) -> type:
    """int32 for doubled ranks while 2·k²/2 + 1 fits (k = stimuli per resample), else int64."""
    return np.int32 if sample_size * sample_size + 1 < np.iinfo(np.int32).max else np.int64


def sorted_layout(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, tiebreak: np.ndarray | None = None
                  ) -> dict[str, np.ndarray | bool]:
    """The per-RDM tables the kernels read: entries sorted by value (then ``tiebreak``), their stimulus
    pair, the sorted position where each tie group ends, and whether any ties exist."""
    order = np.argsort(values, kind="stable") if tiebreak is None else np.lexsort((tiebreak, values))
    ordered = values[order]
    new_group = np.empty(ordered.size, dtype=bool)
    new_group[:-1] = ordered[1:] != ordered[:-1]
    new_group[-1] = True
    ends = np.flatnonzero(new_group)
    group = np.concatenate([[0], np.cumsum(new_group[:-1])])
    return {
        "order": order,
        "rows": rows[order].astype(index_dtype(int(max(rows.max(), cols.max())) + 1)),
        "cols": cols[order].astype(index_dtype(int(max(rows.max(), cols.max())) + 1)),
        "group_end": ends[group].astype(np.int32),
        "ties": bool(ends.size < ordered.size),
    }


if HAVE_NUMBA:

    @njit(cache=True, nogil=True)
    def _reference_pass(counts, rows, cols, group_end, ties, ranks):
        """Doubled ranks of the reference entries (in its sorted order) and the sums M, Σw·y, Σw·y²."""
        m = rows.shape[0]
        total = 0
        s1 = 0.0
        s2 = 0.0
        if not ties:  # the common case gets the plain loop (several times faster than the group loop)
            for q in range(m):
                w = counts[rows[q]] * counts[cols[q]]
                x = 2 * total + w + 1
                ranks[q] = x
                xf = float(x)
                s1 += w * xf
                s2 += w * xf * xf
                total += w
            return total, s1, s2
        p = 0
        while p < m:
            e = group_end[p]
            wg = 0
            for q in range(p, e + 1):
                wg += counts[rows[q]] * counts[cols[q]]
            x = 2 * total + wg + 1
            for q in range(p, e + 1):
                ranks[q] = x
            xf = float(x)
            s1 += wg * xf
            s2 += wg * xf * xf
            total += wg
            p = e + 1
        return total, s1, s2

    @njit(cache=True, nogil=True)
    def _scatter(values, inverse, out):
        """out[inverse[q]] = values[q]: the reference ranks rearranged into a model's sorted order."""
        for q in range(values.shape[0]):
            out[inverse[q]] = values[q]

    @njit(cache=True, nogil=True)
    def _model_pass(counts, rows, cols, group_end, ties, ref_ranks):
        """Σw·x, Σw·x², Σw·x·y for a model's doubled ranks x and the reference's doubled ranks y, both
        in the model's sorted order (so this pass reads memory sequentially)."""
        m = rows.shape[0]
        sa = 0.0
        saa = 0.0
        sab = 0.0
        cum = 0
        if not ties:
            for q in range(m):
                w = counts[rows[q]] * counts[cols[q]]
                xf = float(2 * cum + w + 1)
                wx = w * xf
                sa += wx
                saa += wx * xf
                sab += wx * ref_ranks[q]
                cum += w
            return sa, saa, sab
        p = 0
        while p < m:
            e = group_end[p]
            wg = 0
            t = 0.0
            for q in range(p, e + 1):
                w = counts[rows[q]] * counts[cols[q]]
                wg += w
                t += w * float(ref_ranks[q])
            xf = float(2 * cum + wg + 1)
            sa += wg * xf
            saa += wg * xf * xf
            sab += xf * t
            cum += wg
            p = e + 1
        return sa, saa, sab

    @njit(parallel=True, cache=True)
    def spearman_resamples(counts, ref_rows, ref_cols, ref_end, ref_ties,
                           rows, cols, group_end, ties, inverse, scratch):
        """Spearman ρ (n_resamples × n_models) of every model RDM with the reference on every resample.

        ``inverse[r][j]`` is where the reference's j-th smallest entry sits in model r's sorted order;
        ``scratch`` is (n_blocks, 2, m) integer working memory, one slice per parallel block.
        """
        n_resamples = counts.shape[0]
        n_models = rows.shape[0]
        n_blocks = scratch.shape[0]
        out = np.empty((n_resamples, n_models))
        for block in prange(n_blocks):
            ref_ranks = scratch[block, 0]
            in_model_order = scratch[block, 1]
            for b in range(block, n_resamples, n_blocks):
                c = counts[b]
                total, s1, s2 = _reference_pass(c, ref_rows, ref_cols, ref_end, ref_ties, ref_ranks)
                var_ref = s2 - s1 * s1 / total
                for r in range(n_models):
                    _scatter(ref_ranks, inverse[r], in_model_order)
                    sa, saa, sab = _model_pass(c, rows[r], cols[r], group_end[r], ties[r], in_model_order)
                    var_model = saa - sa * sa / total
                    out[b, r] = (sab - sa * s1 / total) / np.sqrt(var_model * var_ref)
        return out

    @njit(parallel=True, cache=True)
    def kendall_resamples(counts, rows, cols, group_end, ref_rank, n_ref_ranks, n_blocks):
        """Kendall τ-a (n_resamples × n_models); entries sorted by (model value, reference value)."""
        n_resamples = counts.shape[0]
        n_models = rows.shape[0]
        m = rows.shape[1]
        out = np.empty((n_resamples, n_models))
        for block in prange(n_blocks):
            tree = np.zeros(n_ref_ranks + 1, np.int64)
            for b in range(block, n_resamples, n_blocks):
                c = counts[b]
                for r in range(n_models):
                    tree[:] = 0
                    inserted = 0
                    score = 0
                    p = 0
                    while p < m:
                        e = group_end[r, p]
                        for q in range(p, e + 1):
                            w = c[rows[r, q]] * c[cols[r, q]]
                            if w:
                                k = ref_rank[r, q]
                                below = 0
                                i = k - 1
                                while i > 0:
                                    below += tree[i]
                                    i -= i & -i
                                upto = 0
                                i = k
                                while i > 0:
                                    upto += tree[i]
                                    i -= i & -i
                                score += w * (below - (inserted - upto))
                        for q in range(p, e + 1):
                            w = c[rows[r, q]] * c[cols[r, q]]
                            if w:
                                i = ref_rank[r, q]
                                while i <= n_ref_ranks:
                                    tree[i] += w
                                    i += i & -i
                                inserted += w
                        p = e + 1
                    out[b, r] = score / (inserted * (inserted - 1) / 2.0)
        return out

    def thread_blocks(n_resamples: int) -> int:
        """How many parallel blocks to split ``n_resamples`` into."""
        return max(1, min(numba.get_num_threads(), n_resamples))
