"""Ridge encoding: per-target alpha by K-fold CV, no intercept, z-scoring with fit-split statistics only.

Method (SPEC §6): X and Y are z-scored with the fit split's mean and population std (ddof=0) + 1e-8; the
same statistics are applied to any data predicted later. For every target the alpha is chosen from
``DEFAULT_ALPHAS`` (20 log-spaced values 1e-10..1e10) by 5-fold CV on the z-scored fit data; the model is
then refit on the whole fit split with each target's alpha.

CV score (as himalaya's ``RidgeCV`` with its default ``l2_neg_loss``): for every fold, alpha and target the
negative mean squared error on the held-out fold (z-scored units); averaged over folds in float64; plus
1e-10·ln(alpha) so that among equal scores the largest alpha wins; argmax (first maximum). Folds are
contiguous blocks in row order (scikit-learn ``KFold(n_folds)`` without shuffling, himalaya's ``cv=5``),
or a seeded permutation of the rows cut the same way when ``shuffle_seed`` is given.

Solver: for each fold one symmetric eigendecomposition — of XᵀX (p × p) when there are at least as many
training rows as features, else of the kernel XXᵀ — after which every alpha and every target costs only
matrix products: predictions(α) = A · diag(1/(λ + α)) · M with A and M computed once per fold. Targets
are processed in batches, so 15,000+ targets never need more than one batch of working memory. Runs in
``dtype`` (float32 default, like himalaya on float32 data) on ``device`` (a GPU when given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import scipy.linalg
import torch
from tqdm.auto import tqdm

from visreps.alignment.bootstrap import pearson_columns
from visreps.alignment.validation import (
    AlignmentInputError,
    check_matrix,
    check_no_constant_columns,
    check_same_stimuli,
    constant_columns,
    resolve_device,
)

DEFAULT_ALPHAS = np.logspace(-10, 10, 20)
ZSCORE_EPSILON = 1e-8
DEFAULT_FOLDS = 5
#: working-memory budget of one batch of targets
TARGET_BATCH_BYTES = 256 * 2**20
#: float64 temporaries of the z-scoring
STANDARDIZE_CHUNK_BYTES = 32 * 2**20


def _column_slices(shape: tuple[int, ...], itemsize: int = 8) -> Iterator[slice]:
    """Slices of columns whose float64 copy fits in STANDARDIZE_CHUNK_BYTES (bounds the temporaries)."""
    step = max(1, STANDARDIZE_CHUNK_BYTES // (itemsize * max(1, shape[0])))
    for start in range(0, shape[1], step):
        yield slice(start, min(start + step, shape[1]))


@dataclass
class Standardizer:
    """Column-wise (x − mean) / (std + 1e-8) with statistics of the fit split (float64, population std).

    Computed and applied a block of columns at a time, so the float64 temporaries never exceed
    STANDARDIZE_CHUNK_BYTES, however many features or targets there are.
    """

    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> "Standardizer":
        mean = torch.empty(x.shape[1], dtype=torch.float64, device=x.device)
        std = torch.empty_like(mean)
        for columns in _column_slices(tuple(x.shape)):
            block = x[:, columns].double()
            mean[columns] = block.mean(dim=0)
            std[columns] = (block - mean[columns]).square_().mean(dim=0).sqrt_()
        return cls(mean, std + ZSCORE_EPSILON)

    def apply(self, x: torch.Tensor, dtype: torch.dtype, columns: slice = slice(None)) -> torch.Tensor:
        """Standardise ``x``, whose columns are ``columns`` of the fit data."""
        mean = self.mean[columns].to(x.device)
        scale = self.scale[columns].to(x.device)
        out = torch.empty(x.shape, dtype=dtype, device=x.device)
        for block in _column_slices(tuple(x.shape)):
            out[:, block] = ((x[:, block].double() - mean[block]) / scale[block]).to(dtype)
        return out

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale.to(z.device, z.dtype) + self.mean.to(z.device, z.dtype)


def kfold_splits(n_samples: int, n_folds: int = DEFAULT_FOLDS, shuffle_seed: int | None = None
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) row indices: contiguous folds like ``KFold(n_folds)``; the first n % k folds get one
    extra row. With ``shuffle_seed`` the rows are first permuted by ``default_rng(shuffle_seed)``."""
    if not 2 <= n_folds <= n_samples:
        raise AlignmentInputError(f"n_folds must be between 2 and the {n_samples} fit stimuli, got {n_folds}")
    rows = np.arange(n_samples)
    if shuffle_seed is not None:
        rows = np.random.default_rng(shuffle_seed).permutation(n_samples)
    sizes = np.full(n_folds, n_samples // n_folds)
    sizes[: n_samples % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    splits = []
    for fold in range(n_folds):
        validation = np.sort(rows[bounds[fold]:bounds[fold + 1]])
        train = np.sort(np.concatenate([rows[:bounds[fold]], rows[bounds[fold + 1]:]]))
        splits.append((train, validation))
    return splits


def symmetric_eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix. On CPU LAPACK's divide-and-conquer
    ``syevd`` through SciPy (≈1.5× faster than torch's CPU eigh here), elsewhere ``torch.linalg.eigh``."""
    if matrix.device.type != "cpu":
        return torch.linalg.eigh(matrix)
    # the transpose of a symmetric C-ordered matrix is the same matrix in Fortran order: LAPACK works on it
    # in place (no copy); ``matrix`` is overwritten
    values, vectors = scipy.linalg.eigh(matrix.numpy().T, driver="evd", overwrite_a=True, check_finite=False)
    return torch.from_numpy(values), torch.from_numpy(vectors)


def _eigen_solver(x_train: torch.Tensor, x_predict: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(eigenvalues λ ≥ 0, A, project) such that predictions = A · diag(1/(λ+α)) · project(Y_train).

    With x_predict None, A maps back to feature weights (the refit) instead of predictions.
    """
    n_train, n_features = x_train.shape
    if n_train >= n_features:
        eigenvalues, vectors = symmetric_eigh(x_train.T @ x_train)
        left = vectors if x_predict is None else x_predict @ vectors
        return eigenvalues.clamp_min(0), left, lambda y: vectors.T @ (x_train.T @ y)
    eigenvalues, vectors = symmetric_eigh(x_train @ x_train.T)
    left = x_train.T @ vectors if x_predict is None else (x_predict @ x_train.T) @ vectors
    return eigenvalues.clamp_min(0), left, lambda y: vectors.T @ y


def _target_batches(n_targets: int, rows: int, n_features: int, target_batch: int | None,
                    itemsize: int) -> Iterator[slice]:
    size = target_batch or max(1, TARGET_BATCH_BYTES // (itemsize * (2 * rows + 3 * n_features)))
    for start in range(0, n_targets, size):
        yield slice(start, min(start + size, n_targets))


@dataclass
class RidgeCVFit:
    """A fitted ridge encoding model. ``weights`` (features × targets) map z-scored X to z-scored Y."""

    weights: torch.Tensor
    best_alphas: np.ndarray
    cv_scores: np.ndarray
    alphas: np.ndarray
    x_standardizer: Standardizer
    y_standardizer: Standardizer

    def predict(self, x: Any, *, device: str | torch.device | None = None, batch_rows: int = 4096) -> torch.Tensor:
        """Predicted responses (stimuli × targets, float32, in the units of the fit responses, on CPU)."""
        features = check_matrix(x, "features to predict from", min_rows=1)
        if features.shape[1] != self.weights.shape[0]:
            raise AlignmentInputError(
                f"features to predict from have {features.shape[1]} columns; the model was fit on "
                f"{self.weights.shape[0]}"
            )
        device = resolve_device(device, x)
        weights = self.weights.to(device)
        out = torch.empty(features.shape[0], weights.shape[1], dtype=torch.float32)
        for start in range(0, features.shape[0], batch_rows):
            z = self.x_standardizer.apply(features[start:start + batch_rows].to(device), weights.dtype)
            out[start:start + batch_rows] = self.y_standardizer.invert((z @ weights).double()).float().cpu()
        return out


def fit_ridge_cv(x: Any, y: Any, *, alphas: Any = DEFAULT_ALPHAS, n_folds: int = DEFAULT_FOLDS,
                 shuffle_seed: int | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32, target_batch: int | None = None,
                 progress: bool = False) -> RidgeCVFit:
    """Fit per-target-alpha ridge (no intercept) on ``x`` (stimuli × features) → ``y`` (stimuli × targets)."""
    features = check_matrix(x, "fit features", min_rows=max(3, n_folds))
    responses = check_matrix(y, "fit responses", min_rows=max(3, n_folds))
    check_same_stimuli(features, responses, "fit features", "fit responses")
    check_no_constant_columns(responses, "fit responses")
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if alphas.size == 0 or not np.all(alphas > 0) or not np.all(np.isfinite(alphas)):
        raise AlignmentInputError(f"alphas must be positive finite numbers, got {alphas}")
    device = resolve_device(device, x)
    x_std, y_std = Standardizer.fit(features), Standardizer.fit(responses)
    xz = x_std.apply(features.to(device), dtype)
    n_samples, n_features = xz.shape
    n_targets = responses.shape[1]
    alpha_t = torch.as_tensor(alphas, dtype=dtype, device=device)
    splits = kfold_splits(n_samples, n_folds, shuffle_seed)
    scores = torch.zeros(n_folds, alphas.size, n_targets, dtype=torch.float64)
    itemsize = torch.finfo(dtype).bits // 8
    batches = list(_target_batches(n_targets, n_samples, n_features, target_batch, itemsize))

    def zscored(batch: slice, rows: torch.Tensor | None = None) -> torch.Tensor:
        block = responses[:, batch] if rows is None else responses[rows.cpu(), batch]
        return y_std.apply(block.to(device), dtype, batch)

    primal = n_samples >= n_features
    if primal:  # XᵀX and XᵀY of all fit stimuli; each fold subtracts its validation part
        gram = xz.T @ xz
        cross = torch.empty(n_features, n_targets, dtype=dtype, device=device)
        for batch in batches:
            cross[:, batch] = xz.T @ zscored(batch)
    bar = tqdm(total=n_folds + 1, desc="ridge CV folds", disable=not progress)
    for fold, (train, validation) in enumerate(splits):
        train_t, val_t = torch.from_numpy(train).to(device), torch.from_numpy(validation).to(device)
        x_val = xz[val_t]
        if train.size >= n_features:
            eigenvalues, vectors = symmetric_eigh(torch.addmm(gram, x_val.T, x_val, alpha=-1))
            eigenvalues, left = eigenvalues.clamp_min(0).to(device), x_val @ vectors.to(device)
        else:
            eigenvalues, left, project = _eigen_solver(xz[train_t], x_val)
        shrinks = 1.0 / (eigenvalues[None, :] + alpha_t[:, None])
        for batch in batches:
            if train.size >= n_features:
                y_val = zscored(batch, val_t)
                projected = vectors.to(device).T @ (cross[:, batch] - x_val.T @ y_val)
            else:
                yz = zscored(batch)
                projected, y_val = project(yz[train_t]), yz[val_t]
            for index in range(alphas.size):
                if index and torch.equal(shrinks[index], shrinks[index - 1]):  # same numbers, same scores
                    scores[fold, index, batch] = scores[fold, index - 1, batch]
                    continue
                sse = (y_val - (left * shrinks[index]) @ projected).square().sum(dim=0)
                scores[fold, index, batch] = (-sse / validation.size).double().cpu()
        bar.update()
    mean_scores = scores.mean(dim=0)
    mean_scores = torch.where(torch.isfinite(mean_scores), mean_scores, torch.tensor(-torch.inf, dtype=torch.float64))
    mean_scores += torch.log(torch.as_tensor(alphas))[:, None] * 1e-10
    best = torch.argmax(mean_scores, dim=0)
    if not bool(torch.isfinite(mean_scores.max(dim=0).values).all()):
        raise AlignmentInputError("ridge CV produced no finite score for some targets; check the fit features")
    if primal:
        eigenvalues, vectors = symmetric_eigh(gram)
        eigenvalues, left = eigenvalues.clamp_min(0).to(device), vectors.to(device)
        project = None
    else:
        eigenvalues, left, project = _eigen_solver(xz, None)
    weights = torch.empty(n_features, n_targets, dtype=dtype)
    best_alphas = alpha_t[best.to(device)]
    for batch in batches:
        projected = left.T @ cross[:, batch] if project is None else project(zscored(batch))
        shrink = 1.0 / (eigenvalues[:, None] + best_alphas[None, batch])
        weights[:, batch] = (left @ (shrink * projected)).cpu()
    bar.update()
    bar.close()
    return RidgeCVFit(weights, alphas[best.numpy()], scores.mean(dim=0).gather(0, best[None]).squeeze(0).numpy(),
                      alphas, x_std, y_std)


@dataclass
class EncodingScore:
    """Mean Pearson r over targets on the evaluation stimuli, the per-target r, and the predictions."""

    mean_r: float
    per_target_r: np.ndarray
    predictions: np.ndarray
    best_alphas: np.ndarray


def encoding_score(x_fit: Any, y_fit: Any, x_eval: Any, y_eval: Any, **ridge_options: Any) -> EncodingScore:
    """Fit ``fit_ridge_cv`` on the fit split, predict the evaluation split, correlate per target."""
    y_evaluation = check_matrix(y_eval, "evaluation responses")
    x_evaluation = check_matrix(x_eval, "evaluation features")
    check_same_stimuli(x_evaluation, y_evaluation, "evaluation features", "evaluation responses")
    check_no_constant_columns(y_evaluation, "evaluation responses")
    model = fit_ridge_cv(x_fit, y_fit, **ridge_options)
    if y_evaluation.shape[1] != model.weights.shape[1]:
        raise AlignmentInputError(
            f"evaluation responses have {y_evaluation.shape[1]} targets but the fit responses "
            f"{model.weights.shape[1]}"
        )
    predictions = model.predict(x_evaluation, device=ridge_options.get("device"))
    per_target = pearson_columns(predictions, y_evaluation.cpu())
    per_target[constant_columns(predictions)] = 0.0  # constant predictions (alpha -> inf) explain nothing: r = 0
    per_target = per_target.numpy()
    return EncodingScore(float(per_target.mean()), per_target, predictions.numpy(), model.best_alphas)
