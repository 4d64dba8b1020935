"""Representational dissimilarity matrices (RDMs) from stimulus × feature activations.

All three functions stream the feature columns in chunks, so a 10,000-stimulus RDM of 290,400-d activations
only ever holds one chunk of columns (``chunk_columns`` × stimuli) plus the stimuli × stimuli accumulator.
Inputs may be numpy arrays, numpy memmaps, h5py datasets or torch tensors (CPU or GPU); each chunk is
checked for NaN/inf as it is read. Each chunk's Gram matrix is computed in the chunk's precision (float32
for float32 activations, or ``precision=torch.float64``) and accumulated in float64. The returned RDM is a
float64 tensor on ``device``, stimuli × stimuli, with an exact zero diagonal.

Zero-variance rows (Pearson) and all-zero rows (cosine) have no defined correlation with anything. With
``on_constant="warn"`` (default) they are given correlation 0 with every other stimulus (dissimilarity 1)
and a ``ConstantRowsWarning`` names them; ``"error"`` raises instead, ``"ignore"`` handles them silently.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import torch

from visreps.alignment.validation import (
    MIN_STIMULI,
    AlignmentInputError,
    block_to_tensor,
    check_finite,
    resolve_device,
)

OnConstant = Literal["warn", "error", "ignore"]

#: a row is constant when its centred sum of squares is ≤ (this × machine epsilon of the data)² × its raw
#: sum of squares, i.e. its spread is below the rounding of its values (exactly constant rows give 0)
CONSTANT_ROW_EPS_FACTOR = 4.0
#: default bytes for one chunk of columns
CHUNK_BYTES = 256 * 2**20
#: rows of the Gram accumulator updated at once (bounds the float32 temporary)
GRAM_ROW_BLOCK = 2048


class ConstantRowsWarning(UserWarning):
    """Some stimuli had constant (zero-variance or all-zero) activations; see the message for which."""


def _shape_of(x: Any, name: str) -> tuple[int, int]:
    shape = tuple(getattr(x, "shape", np.shape(x)))
    if len(shape) != 2:
        raise AlignmentInputError(
            f"{name} must be 2-D (stimuli × features), got shape {shape}; flatten feature dimensions first"
        )
    if shape[0] < MIN_STIMULI:
        raise AlignmentInputError(f"{name} has {shape[0]} stimuli (rows); at least {MIN_STIMULI} are needed")
    if shape[1] < 1:
        raise AlignmentInputError(f"{name} has no feature columns (shape {shape})")
    return int(shape[0]), int(shape[1])


def _column_chunks(x: Any, name: str, chunk_columns: int | None, device: torch.device,
                   precision: torch.dtype | None):
    """Yield (start, chunk tensor on device) over column chunks of ``x``, each checked for NaN/inf."""
    n_rows, n_cols = _shape_of(x, name)
    itemsize = 8 if precision == torch.float64 else 4
    step = chunk_columns or max(1, CHUNK_BYTES // (itemsize * n_rows))
    for start in range(0, n_cols, step):
        block = x[:, start:start + step]
        chunk = block_to_tensor(block)
        dtype = precision or (chunk.dtype if chunk.dtype in (torch.float32, torch.float64) else torch.float32)
        chunk = chunk.to(device=device, dtype=dtype)
        check_finite(chunk, name, where=f" in columns {start}..{start + chunk.shape[1] - 1}")
        yield start, chunk


def _add_gram(accumulator: torch.Tensor, chunk: torch.Tensor) -> None:
    """accumulator (float64) += chunk @ chunk.T, computed in the chunk's dtype in blocks of rows."""
    for start in range(0, chunk.shape[0], GRAM_ROW_BLOCK):
        accumulator[start:start + GRAM_ROW_BLOCK] += (chunk[start:start + GRAM_ROW_BLOCK] @ chunk.T).double()


def _centred_gram(x: Any, name: str, chunk_columns: int | None, device: torch.device,
                  precision: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(row-centred Gram matrix, constant-row mask), float64 / bool, in one pass over the columns.

    Each chunk is centred with its own row means; the between-chunk part sum_c n_c (m_c - m)(m_c - m)^T is
    added at the end (a stable one-pass combination, no cancellation from large row means).
    """
    n_rows, n_cols = _shape_of(x, name)
    gram = torch.zeros(n_rows, n_rows, dtype=torch.float64, device=device)
    raw_squares = torch.zeros(n_rows, dtype=torch.float64, device=device)
    chunk_means, chunk_sizes = [], []
    eps = 0.0
    for _, chunk in _column_chunks(x, name, chunk_columns, device, precision):
        eps = max(eps, torch.finfo(chunk.dtype).eps)
        means = chunk.double().mean(dim=1)
        raw_squares += chunk.double().square().sum(dim=1)
        centred = chunk - means.to(chunk.dtype)[:, None]
        _add_gram(gram, centred)
        chunk_means.append(means)
        chunk_sizes.append(chunk.shape[1])
    means = torch.stack(chunk_means, dim=1)
    sizes = torch.tensor(chunk_sizes, dtype=torch.float64, device=device)
    deviations = means - (means @ sizes / n_cols)[:, None]
    gram += (deviations * sizes) @ deviations.T
    return gram, gram.diagonal() <= (CONSTANT_ROW_EPS_FACTOR * eps) ** 2 * raw_squares


def _handle_constant(constant: torch.Tensor, on_constant: OnConstant, name: str, what: str) -> None:
    if not bool(constant.any()):
        return
    rows = torch.nonzero(constant).flatten().tolist()
    shown = ", ".join(str(r) for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
    message = f"{name}: {len(rows)} stimuli have {what} activations (rows {shown})"
    if on_constant == "error":
        raise AlignmentInputError(message + "; their correlation distance is undefined: drop them or pass "
                                  "on_constant='warn' to give them dissimilarity 1 to every other stimulus")
    if on_constant == "warn":
        warnings.warn(message + "; they were given dissimilarity 1 to every other stimulus",
                      ConstantRowsWarning, stacklevel=3)
    elif on_constant != "ignore":
        raise AlignmentInputError(f"on_constant must be 'warn', 'error' or 'ignore', got {on_constant!r}")


def _correlation_to_rdm(gram: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
    norms = gram.diagonal().clamp_min(0).sqrt()
    norms = torch.where(constant, torch.ones_like(norms), norms)
    correlation = gram / norms[:, None] / norms[None, :]
    correlation[constant, :] = 0.0
    correlation[:, constant] = 0.0
    rdm = (1.0 - correlation).clamp_(0.0, 2.0)
    rdm.fill_diagonal_(0.0)
    return rdm


def constant_rows(x: Any, *, chunk_columns: int | None = None, device: str | torch.device | None = None
                  ) -> torch.Tensor:
    """Indices of the rows (stimuli) of ``x`` whose activations have zero variance."""
    device = resolve_device(device, x)
    _, constant = _centred_gram(x, "activations", chunk_columns, device, None)
    return torch.nonzero(constant).flatten()


def rdm_pearson(x: Any, *, on_constant: OnConstant = "warn", chunk_columns: int | None = None,
                device: str | torch.device | None = None, precision: torch.dtype | None = None,
                name: str = "activations") -> torch.Tensor:
    """1 − Pearson correlation between the rows of ``x`` (stimuli × features); float64, range [0, 2]."""
    device = resolve_device(device, x)
    gram, constant = _centred_gram(x, name, chunk_columns, device, precision)
    _handle_constant(constant, on_constant, name, "zero-variance")
    return _correlation_to_rdm(gram, constant)


def rdm_cosine(x: Any, *, on_constant: OnConstant = "warn", chunk_columns: int | None = None,
               device: str | torch.device | None = None, precision: torch.dtype | None = None,
               name: str = "activations") -> torch.Tensor:
    """1 − cosine similarity between the rows of ``x`` (stimuli × features); float64, range [0, 2]."""
    device = resolve_device(device, x)
    n_rows, _ = _shape_of(x, name)
    gram = torch.zeros(n_rows, n_rows, dtype=torch.float64, device=device)
    for _, chunk in _column_chunks(x, name, chunk_columns, device, precision):
        _add_gram(gram, chunk)
    constant = gram.diagonal() <= 0.0
    _handle_constant(constant, on_constant, name, "all-zero")
    return _correlation_to_rdm(gram, constant)


def rdm_euclidean(x: Any, *, chunk_columns: int | None = None, device: str | torch.device | None = None,
                  precision: torch.dtype | None = None, name: str = "activations") -> torch.Tensor:
    """Euclidean distance between the rows of ``x`` (stimuli × features); float64.

    Each column chunk is centred over stimuli first (distances are translation invariant), which keeps the
    float64 identity d² = g_ii + g_jj − 2 g_ij free of cancellation.
    """
    device = resolve_device(device, x)
    n_rows, _ = _shape_of(x, name)
    gram = torch.zeros(n_rows, n_rows, dtype=torch.float64, device=device)
    for _, chunk in _column_chunks(x, name, chunk_columns, device, precision):
        centred = chunk - chunk.double().mean(dim=0).to(chunk.dtype)[None, :]
        _add_gram(gram, centred)
    squares = gram.diagonal().clone()
    distance = (squares[:, None] + squares[None, :] - 2.0 * gram).clamp_min_(0.0).sqrt_()
    distance.fill_diagonal_(0.0)
    return distance


RDM_FUNCTIONS = {"pearson": rdm_pearson, "cosine": rdm_cosine, "euclidean": rdm_euclidean}


def compute_rdm(x: Any, metric: str = "pearson", **options: Any) -> torch.Tensor:
    """RDM of ``x`` with ``metric`` in RDM_FUNCTIONS ("pearson" = 1 − Pearson r, the study's choice)."""
    if metric not in RDM_FUNCTIONS:
        raise AlignmentInputError(f"unknown RDM metric {metric!r}; choose one of {', '.join(RDM_FUNCTIONS)}")
    return RDM_FUNCTIONS[metric](x, **options)
