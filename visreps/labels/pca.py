"""Exact PCA from streamed rows: float64 sum and cross-product accumulated batch by batch, then ``eigh``.

Memory is O(D²) whatever the number of rows N, so 1.26 M × 4,096 features never need to be held at once.
The accumulators are shifted by the first batch's mean (``Σ(x − s)``, ``Σ(x − s)ᵀ(x − s)``) so that the
covariance does not lose digits to cancellation when the mean is large compared with the spread.

Sign rule (eigenvectors are defined up to sign): each component is flipped so that its entry of largest
absolute value is positive (the first such entry when several tie). Labels built on the components are then
reproducible across solvers and machines, as long as eigenvalues are distinct.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from visreps.labels.errors import LabelError


class CovarianceAccumulator:
    """Running mean and covariance of rows of width ``dim`` (float64 on ``device``)."""

    def __init__(self, dim: int, device: str | torch.device = "cpu") -> None:
        if dim < 1:
            raise LabelError(f"feature dimension must be at least 1, got {dim}")
        self.dim = int(dim)
        self.device = torch.device(device)
        self.count = 0
        self._shift: torch.Tensor | None = None
        self._sum = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        self._cross = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.device)

    def update(self, rows: torch.Tensor | np.ndarray) -> None:
        """Add rows of shape (B, dim); B may be 0. Non-finite values are an error."""
        rows = torch.as_tensor(rows).to(self.device, torch.float64)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise LabelError(f"feature batch has shape {tuple(rows.shape)}; expected (batch, {self.dim})")
        if rows.shape[0] == 0:
            return
        if not bool(torch.isfinite(rows).all()):
            raise LabelError("feature batch holds NaN or inf values; check the feature source")
        if self._shift is None:
            self._shift = rows.mean(dim=0)
        centred = rows - self._shift
        self._sum += centred.sum(dim=0)
        self._cross.addmm_(centred.T, centred)
        self.count += int(rows.shape[0])

    def mean(self) -> torch.Tensor:
        """Mean row (dim,), float64."""
        if self.count == 0:
            raise LabelError("no rows were accumulated; the fit set is empty")
        return self._shift + self._sum / self.count

    def covariance(self) -> torch.Tensor:
        """Sample covariance (dim, dim), divided by N − 1, float64, exactly symmetric."""
        if self.count < 2:
            raise LabelError(f"a covariance needs at least 2 fit rows, got {self.count}")
        centred_sum = self._sum / self.count
        cov = (self._cross - self.count * torch.outer(centred_sum, centred_sum)) / (self.count - 1)
        return (cov + cov.T) / 2


def fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each row of (n, D) so that its entry of largest |value| (first on ties) is positive."""
    components = np.array(components, dtype=np.float64, copy=True)
    if components.size == 0:
        return components
    pivots = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), pivots])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


@dataclass(frozen=True)
class PCAResult:
    """Principal components of the fit rows.

    ``mean`` (D,); ``components`` (n_components, D), unit rows, descending eigenvalue, signs by ``fix_signs``;
    ``eigenvalues`` (D,) all eigenvalues of the covariance, descending, clipped at 0;
    ``explained_variance_ratio`` (D,) eigenvalues / their sum; ``n_samples`` fit rows.
    """

    mean: np.ndarray
    components: np.ndarray
    eigenvalues: np.ndarray
    explained_variance_ratio: np.ndarray
    n_samples: int

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def projector(self, device: str | torch.device = "cpu") -> "Projector":
        """A callable mapping rows (B, D) to projections (B, n_components), float64, on ``device``."""
        return Projector(self.mean, self.components, device)


class Projector:
    """``(x − mean) @ componentsᵀ`` in float64 on one device."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self._mean = torch.as_tensor(mean, dtype=torch.float64, device=self.device)
        self._components = torch.as_tensor(components, dtype=torch.float64, device=self.device)

    def __call__(self, rows: torch.Tensor | np.ndarray) -> torch.Tensor:
        rows = torch.as_tensor(rows).to(self.device, torch.float64)
        if rows.ndim != 2 or rows.shape[1] != self._mean.shape[0]:
            raise LabelError(f"rows to project have shape {tuple(rows.shape)}; expected (batch, {self._mean.shape[0]})")
        return (rows - self._mean) @ self._components.T


def check_n_components(n_components: int, dim: int, n_fit: int) -> None:
    """Raise LabelError unless 1 ≤ n_components ≤ min(dim, n_fit − 1)."""
    if n_components < 1:
        raise LabelError(f"n_pcs must be at least 1, got {n_components}")
    if n_components > dim:
        raise LabelError(
            f"n_pcs={n_components} is more principal components than the {dim} feature dimensions; "
            f"lower n_pcs (and the largest K to at most 2**{dim}) or use a wider feature source"
        )
    if n_components > n_fit - 1:
        raise LabelError(
            f"n_pcs={n_components} needs at least {n_components + 1} fit images, but there are {n_fit}; "
            "use more images (dataset.max_images) or fewer PCs"
        )


def pca_from_accumulator(accumulator: CovarianceAccumulator, n_components: int) -> PCAResult:
    """Eigendecompose the accumulated covariance and keep the top ``n_components`` (sign-fixed)."""
    check_n_components(n_components, accumulator.dim, accumulator.count)
    covariance = accumulator.covariance()
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues = torch.flip(eigenvalues, dims=[0]).clamp_min(0.0).cpu().numpy()
    top = torch.flip(eigenvectors[:, -n_components:], dims=[1]).T.cpu().numpy()
    total = float(eigenvalues.sum())
    if total <= 0.0:
        raise LabelError("the fit features have zero variance (all rows identical); PCA labels are undefined")
    return PCAResult(
        mean=accumulator.mean().cpu().numpy(),
        components=fix_signs(top),
        eigenvalues=eigenvalues,
        explained_variance_ratio=eigenvalues / total,
        n_samples=accumulator.count,
    )
