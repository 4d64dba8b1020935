"""Seeded sparse random projection (Johnson–Lindenstrauss) of activations to k = 4,096 dimensions.

The matrix R (D input features × k components) has independent entries, each nonzero with probability
``density`` (default 1/√D, scikit-learn's "auto") and then ±sqrt(1/(density·k)) with equal probability —
the distribution of scikit-learn's ``SparseRandomProjection``. When D ≤ k the projection is the identity.

Reproducibility: the matrix is a pure function of (D, k, density, seed), generated on the CPU with integer
arithmetic only, so the same seed gives the same matrix on every machine and every numpy version that keeps
PCG64. ``SeedSequence(seed).spawn(2)`` gives two PCG64 streams; entry (d, j) (row-major over d, then j) is
nonzero iff the next uint32 of the first stream (the low then high half of each raw 64-bit draw) is below
round(density·2³²), and its sign is + iff the next raw draw of the second stream is even. The matrix is
generated over chunks of input features (never dense) and stored as a torch sparse CSR (k × D, float32);
``project`` multiplies batch by batch of stimuli on any device (on the CPU with a compiled numba kernel, or
SciPy's sparse product in parallel threads without numba; both are faster there than torch's).
"""

from __future__ import annotations

import sys
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse
import torch

from visreps.alignment import _projection_kernel
from visreps.alignment.validation import AlignmentInputError, block_to_tensor, check_finite, resolve_device

DEFAULT_COMPONENTS = 4096
#: CPU product: "numba" (compiled kernel, when numba is installed), "scipy" (SciPy's sparse product on row
#: batches in threads) or "torch" (torch sparse CSR, as on other devices)
CPU_KERNEL = "numba"
#: input features generated at once (bounds the temporary random draws to chunk × k × 4 bytes)
GENERATION_CHUNK = 2048


def _rows_per_batch(x: Any) -> int:
    """Stimuli per batch: 64 MB of float32 input rows (each CPU worker also makes one transposed copy)."""
    return max(1, int(64 * 2**20 // (4 * max(1, x.shape[1]))))


@dataclass
class SparseProjection:
    """A seeded sparse random projection from ``n_features`` to ``n_components`` (identity if D ≤ k)."""

    n_features: int
    n_components: int
    density: float
    seed: int
    matrix: torch.Tensor | None
    _on_device: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def is_identity(self) -> bool:
        return self.matrix is None

    @property
    def output_dim(self) -> int:
        return self.n_features if self.is_identity else self.n_components

    def describe(self) -> dict[str, Any]:
        """What to record so the projection can be rebuilt (e.g. as tracking parameters)."""
        return {"projection_features": self.n_features, "projection_components": self.output_dim,
                "projection_density": self.density, "projection_seed": self.seed,
                "projection_nonzeros": 0 if self.matrix is None else int(self.matrix.values().numel())}

    def _matrix_on(self, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self.matrix.to(device)
        return self._on_device[key]

    def _scipy_matrix(self) -> scipy.sparse.csr_matrix:
        if "scipy" not in self._on_device:
            m = self.matrix
            self._on_device["scipy"] = scipy.sparse.csr_matrix(
                (m.values().numpy(), m.col_indices().numpy(), m.crow_indices().numpy()), shape=tuple(m.shape))
        return self._on_device["scipy"]

    def project(self, x: Any, *, batch_rows: int | None = None, device: str | torch.device | None = None,
                name: str = "activations") -> torch.Tensor:
        """Project ``x`` (stimuli × n_features: numpy, memmap, h5py or torch) → stimuli × k float32 on ``device``.

        On the CPU the product runs in a compiled kernel (numba; 16 stimuli per pass, no input copy),
        or without numba in SciPy's sparse product on row batches in a thread pool (one thread per torch
        thread; it releases the GIL); elsewhere as a torch sparse CSR product.
        """
        shape = tuple(getattr(x, "shape", np.shape(x)))
        if len(shape) != 2 or shape[1] != self.n_features:
            raise AlignmentInputError(
                f"{name} has shape {shape}; the projection expects stimuli × {self.n_features} features"
            )
        device = resolve_device(device, x)
        rows = batch_rows or _rows_per_batch(x)
        if device.type == "cpu" and not self.is_identity and CPU_KERNEL == "numba" and _projection_kernel.HAVE_NUMBA:
            return self._project_numba(x, shape, rows, name)
        out = torch.empty(shape[0], self.output_dim, dtype=torch.float32, device=device)
        cpu = device.type == "cpu" and not self.is_identity and CPU_KERNEL != "torch"
        workers = max(1, min(torch.get_num_threads(), -(-shape[0] // rows))) if cpu else 0
        with ThreadPoolExecutor(workers) if workers else nullcontext() as pool:
            pending: list[Future] = []
            for start in range(0, shape[0], rows):
                batch = block_to_tensor(x[start:start + rows]).to(device=device, dtype=torch.float32)
                check_finite(batch, name, where=f" in stimuli {start}..{start + batch.shape[0] - 1}")
                target = out[start:start + batch.shape[0]]
                if self.is_identity:
                    target.copy_(batch)
                elif pool is None:
                    target.copy_((self._matrix_on(device) @ batch.T).T)
                else:
                    pending.append(pool.submit(self._project_batch_cpu, batch, target))
                    if len(pending) >= workers:  # at most one batch per worker in flight (bounded memory)
                        pending.pop(0).result()
            for job in pending:
                job.result()
        return out

    def _project_batch_cpu(self, batch: torch.Tensor, target: torch.Tensor) -> None:
        target.copy_(torch.from_numpy(np.asarray(self._scipy_matrix() @ batch.numpy().T).T))

    def _project_numba(self, x: Any, shape: tuple[int, int], rows: int, name: str) -> torch.Tensor:
        if "csc" not in self._on_device:
            csc = self._scipy_matrix().tocsc()
            self._on_device["csc"] = (csc.indptr.astype(np.int64), csc.indices.astype(np.int32),
                                      csc.data.astype(np.float32))
        out = np.empty((shape[0], self.output_dim), dtype=np.float32)
        for start in range(0, shape[0], rows):
            batch = block_to_tensor(x[start:start + rows]).to(dtype=torch.float32).contiguous()
            check_finite(batch, name, where=f" in stimuli {start}..{start + batch.shape[0] - 1}")
            _projection_kernel.project_rows(batch.numpy(), *self._on_device["csc"], out[start:start + batch.shape[0]])
        return torch.from_numpy(out)


class _Uint32Stream:
    """Consecutive uint32 values from a PCG64 generator: the low, then the high half of each raw 64-bit draw."""

    def __init__(self, generator: np.random.Generator) -> None:
        self.generator = generator
        self.spare = np.empty(0, dtype=np.uint32)

    def take(self, count: int) -> np.ndarray:
        head, self.spare = self.spare[:count], self.spare[count:]
        count -= head.size
        raw = self.generator.bit_generator.random_raw((count + 1) // 2)
        if sys.byteorder == "little":
            values = raw.view(np.uint32)
        else:
            values = np.empty(2 * raw.size, dtype=np.uint32)
            values[0::2] = raw & np.uint64(0xFFFFFFFF)
            values[1::2] = raw >> np.uint64(32)
        self.spare = np.concatenate([self.spare, values[count:]])
        return np.concatenate([head, values[:count]])


def sparse_random_projection(n_features: int, n_components: int = DEFAULT_COMPONENTS, *,
                             density: float | None = None, seed: int = 0) -> SparseProjection:
    """Build the projection for ``n_features`` inputs (see the module docstring for the exact rule)."""
    if n_features < 1 or n_components < 1:
        raise AlignmentInputError(f"n_features and n_components must be ≥ 1, got {n_features}, {n_components}")
    density = 1.0 / np.sqrt(n_features) if density is None else float(density)
    if not 0.0 < density <= 1.0:
        raise AlignmentInputError(f"density must be in (0, 1], got {density}")
    if n_features <= n_components:
        return SparseProjection(n_features, n_components, density, seed, None)
    mask_seed, sign_seed = np.random.SeedSequence(seed).spawn(2)
    mask_stream = _Uint32Stream(np.random.Generator(np.random.PCG64(mask_seed)))
    sign_stream = np.random.Generator(np.random.PCG64(sign_seed))
    threshold = np.uint32(min(round(density * 2**32), 2**32 - 1))
    features, components, signs = [], [], []
    for start in range(0, n_features, GENERATION_CHUNK):
        rows = min(GENERATION_CHUNK, n_features - start)
        flat = np.flatnonzero(mask_stream.take(rows * n_components) < threshold)
        features.append(start + flat // n_components)
        components.append(flat % n_components)
        signs.append(sign_stream.bit_generator.random_raw(flat.size) & np.uint64(1))
    feature_index = np.concatenate(features)
    component_index = np.concatenate(components)
    value = np.float32(np.sqrt(1.0 / (density * n_components)))
    values = np.where(np.concatenate(signs) == 0, value, -value).astype(np.float32)
    order = np.lexsort((feature_index, component_index))
    crow = np.zeros(n_components + 1, dtype=np.int64)
    np.cumsum(np.bincount(component_index, minlength=n_components), out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        matrix = torch.sparse_csr_tensor(torch.from_numpy(crow),
                                         torch.from_numpy(feature_index[order].astype(np.int64)),
                                         torch.from_numpy(values[order]), size=(n_components, n_features),
                                         check_invariants=False)
    return SparseProjection(n_features, n_components, density, seed, matrix)


def project_features(x: Any, n_components: int = DEFAULT_COMPONENTS, *, seed: int = 0,
                     density: float | None = None, device: str | torch.device | None = None) -> torch.Tensor:
    """Project ``x`` (stimuli × features) with ``sparse_random_projection(x.shape[1], n_components, seed=seed)``."""
    shape = tuple(getattr(x, "shape", np.shape(x)))
    if len(shape) != 2:
        raise AlignmentInputError(f"features must be stimuli × features, got shape {shape}")
    return sparse_random_projection(shape[1], n_components, density=density, seed=seed).project(x, device=device)
