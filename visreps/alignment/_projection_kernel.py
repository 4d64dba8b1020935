"""Compiled (numba) kernel for the sparse random projection of dense activation rows on the CPU.

out[b] = Σ_d x[b, d] · R[:, d] over the nonzero entries of R (k × D, compressed sparse columns), for 16
stimuli at once: each nonzero R[j, d] is read once per 16 stimuli and added, times their 16 activations, into
a contiguous 16-float vector of partial sums (vectorised), the k × 16 sums staying in the L2 cache. Blocks of
16 stimuli run in parallel; the input is read in place (no transposed copy, unlike SciPy's product).
Import ``HAVE_NUMBA`` to know whether it is available (else SciPy is used).
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False


#: stimuli projected together: their partial sums for one output form a contiguous vector of this length
LANES = 16

if HAVE_NUMBA:

    @njit(parallel=True, cache=True)
    def project_rows(x, column_starts, row_indices, values, out):
        """out (B × k) = x (B × D) · Rᵀ for R given as CSC arrays (column_starts has D + 1 entries)."""
        n_rows, n_features = x.shape
        n_components = out.shape[1]
        for block in prange((n_rows + LANES - 1) // LANES):
            first = block * LANES
            used = min(LANES, n_rows - first)
            sums = np.zeros((n_components, LANES), np.float32)  # 256 KiB for k = 4096: stays in L2
            column = np.zeros(LANES, np.float32)
            for d in range(n_features):
                for b in range(used):
                    column[b] = x[first + b, d]
                for p in range(column_starts[d], column_starts[d + 1]):
                    component = row_indices[p]
                    value = values[p]
                    for b in range(LANES):
                        sums[component, b] += column[b] * value
            for b in range(used):
                for j in range(n_components):
                    out[first + b, j] = sums[j, b]
