"""Ridge encoding: per-target alpha by K-fold CV, no intercept, z-scoring with fit-split statistics only.

Method (docs/method.md §6): X and Y are z-scored with the fit split's mean and population std (ddof=0) + 1e-8; the
same statistics are applied to any data predicted later. A feature constant on the fit split (a unit silent on
every fit stimulus) is set to 0 on every stimulus, fit or predicted: it carries nothing the model could learn.
For every target the alpha is chosen from ``DEFAULT_ALPHAS`` (20 log-spaced values 1e-10..1e10) by 5-fold CV on
the z-scored fit data; the model is then refit on the whole fit split with each target's alpha.

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
#: matrices from this size on are decomposed by SciPy's syevd on CPU (faster there; torch below)
SCIPY_EIGH_MIN_SIZE = 1536


def _column_slices(shape: tuple[int, ...], itemsize: int = 8) -> Iterator[slice]:
    """Slices of columns whose float64 copy fits in STANDARDIZE_CHUNK_BYTES (bounds the temporaries)."""
    step = max(1, STANDARDIZE_CHUNK_BYTES // (itemsize * max(1, shape[0])))
    for start in range(0, shape[1], step):
        yield slice(start, min(start + step, shape[1]))


@dataclass
class Standardizer:
    """Column-wise (x − mean) / (std + 1e-8) with statistics of the fit split (float64, population std).

    A column constant on the fit split gets an infinite scale, so it is 0 on any data standardised later: with
    std + 1e-8 a unit silent on the fit stimuli that fires on a predicted one would reach z ≈ 1e8 there and
    multiply the solver's rounding noise in its (zero) weight into the prediction. Computed and applied a block of
    columns at a time, so the float64 temporaries never exceed STANDARDIZE_CHUNK_BYTES, however many features or
    targets there are.
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
            block_std = (block - mean[columns]).square_().mean(dim=0).sqrt_()
            block_std[constant_columns(block)] = torch.inf
            std[columns] = block_std
        return cls(mean, std + ZSCORE_EPSILON)

    def apply(self, x: torch.Tensor, dtype: torch.dtype, columns: slice = slice(None)) -> torch.Tensor:
        """Standardise ``x``, whose columns are ``columns`` of the fit data, into ``dtype``.

        Computed in the wider of ``x``'s dtype and ``dtype``: float32 data into float32 stays float32. The
        statistics are float64 either way; on that path the mean is rounded to float32 before the subtraction, so
        z carries an extra absolute error of about 6e-8 · |mean| / std (as in a float32 pipeline like himalaya's).
        """
        work = torch.promote_types(x.dtype, dtype) if x.is_floating_point() else torch.float64
        mean = self.mean[columns].to(x.device, work)
        scale = self.scale[columns].to(x.device, work)
        if work == dtype and x.dtype == dtype:
            return (x - mean).div_(scale)
        out = torch.empty(x.shape, dtype=dtype, device=x.device)
        for block in _column_slices(tuple(x.shape)):
            out[:, block] = ((x[:, block].to(work) - mean[block]) / scale[block]).to(dtype)
        return out

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        """Back to the fit units: z · scale + mean (a column constant on the fit split is its constant)."""
        scale = self.scale.to(z.device, z.dtype)
        return torch.where(torch.isinf(scale), 0.0, z * scale) + self.mean.to(z.device, z.dtype)


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
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix. On CPU, from SCIPY_EIGH_MIN_SIZE rows on,
    LAPACK's divide-and-conquer ``syevd`` through SciPy (≈1.3× faster than torch's CPU eigh at 4,096 rows,
    slower below ~1,500: benchmarks/README.md), otherwise ``torch.linalg.eigh``. ``matrix`` may be overwritten."""
    if matrix.device.type != "cpu" or matrix.shape[0] < SCIPY_EIGH_MIN_SIZE:
        return torch.linalg.eigh(matrix)
    # the transpose of a symmetric C-ordered matrix is the same matrix in Fortran order: LAPACK works on it
    # in place (no copy); ``matrix`` is overwritten
    values, vectors = scipy.linalg.eigh(matrix.numpy().T, driver="evd", overwrite_a=True, check_finite=False)
    return torch.from_numpy(values), torch.from_numpy(vectors)


def _kernel_solver(kernel: torch.Tensor, train: torch.Tensor, predict: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kernel form from the (n × n) kernel XXᵀ of all fit rows: (λ ≥ 0, V, A) with V the eigenvectors of the
    train rows' kernel and A = K[predict, train] · V, so predictions(α) = A · diag(1/(λ+α)) · Vᵀ Y_train."""
    eigenvalues, vectors = symmetric_eigh(kernel[train][:, train])
    vectors = vectors.to(kernel.device)
    left = kernel[predict][:, train] @ vectors
    return eigenvalues.clamp_min(0).to(kernel.device), vectors, left


def _distinct_rows(shrinks: torch.Tensor) -> list[int]:
    """For each alpha the index of the first alpha with the same shrink factors (equal numbers, equal scores:
    the tie-break then prefers the largest alpha, as himalaya does)."""
    same = [0]
    for index in range(1, shrinks.shape[0]):
        same.append(same[-1] if torch.equal(shrinks[index], shrinks[index - 1]) else index)
    return same


def _validation_sse(y_val: torch.Tensor, left: torch.Tensor, shrinks: torch.Tensor, projected: torch.Tensor,
                    distinct: list[int]) -> torch.Tensor:
    """(alphas, targets) sum of squared validation errors; predictions(α) = (A · diag(shrink_α)) @ projected,
    computed for the distinct alphas in chunks that fit TARGET_BATCH_BYTES."""
    unique = sorted(set(distinct))
    sse = torch.empty(len(unique), y_val.shape[1], dtype=y_val.dtype, device=y_val.device)
    per_alpha = max(1, y_val.numel() * y_val.element_size())
    step = max(1, TARGET_BATCH_BYTES // per_alpha)
    for start in range(0, len(unique), step):
        chosen = unique[start:start + step]
        predictions = torch.matmul(left[None] * shrinks[chosen][:, None, :], projected)
        sse[start:start + len(chosen)] = (predictions - y_val[None]).square_().sum(dim=1)
    position = {index: row for row, index in enumerate(unique)}
    return sse[[position[index] for index in distinct]]


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
    # kernel form: one n × n kernel of all fit rows; every fold's train and validation kernels are blocks of it
    kernel = xz @ xz.T if not primal or any(train.size < n_features for train, _ in splits) else None
    bar = tqdm(total=n_folds + 1, desc="ridge CV folds", disable=not progress)
    for fold, (train, validation) in enumerate(splits):
        train_t, val_t = torch.from_numpy(train).to(device), torch.from_numpy(validation).to(device)
        fold_primal = train.size >= n_features
        if fold_primal:
            x_val = xz[val_t]
            eigenvalues, vectors = symmetric_eigh(torch.addmm(gram, x_val.T, x_val, alpha=-1))
            eigenvalues, vectors = eigenvalues.clamp_min(0).to(device), vectors.to(device)
            left = x_val @ vectors
        else:
            eigenvalues, vectors, left = _kernel_solver(kernel, train_t, val_t)
        shrinks = 1.0 / (eigenvalues[None, :] + alpha_t[:, None])
        distinct = _distinct_rows(shrinks)
        for batch in batches:
            if fold_primal:
                y_val = zscored(batch, val_t)
                projected = vectors.T @ (cross[:, batch] - x_val.T @ y_val)
            else:
                yz = zscored(batch)
                projected, y_val = vectors.T @ yz[train_t], yz[val_t]
            sse = _validation_sse(y_val, left, shrinks, projected, distinct)
            scores[fold, :, batch] = (-sse / validation.size).double().cpu()
        bar.update()
    mean_scores = scores.mean(dim=0)
    mean_scores = torch.where(torch.isfinite(mean_scores), mean_scores, torch.tensor(-torch.inf, dtype=torch.float64))
    mean_scores += torch.log(torch.as_tensor(alphas))[:, None] * 1e-10
    best = torch.argmax(mean_scores, dim=0)
    if not bool(torch.isfinite(mean_scores.max(dim=0).values).all()):
        raise AlignmentInputError("ridge CV produced no finite score for some targets; check the fit features")
    eigenvalues, vectors = symmetric_eigh(gram if primal else kernel)  # overwrites it: its last use
    eigenvalues, vectors = eigenvalues.clamp_min(0).to(device), vectors.to(device)
    left = vectors if primal else xz.T @ vectors  # maps the shrunk projections to feature weights
    weights = torch.empty(n_features, n_targets, dtype=dtype)
    best_alphas = alpha_t[best.to(device)]
    for batch in batches:
        projected = vectors.T @ cross[:, batch] if primal else vectors.T @ zscored(batch)
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
