"""The straightforward reference scoring of bench_evaluate.py: all in memory, SciPy loops, himalaya ridge.

RSA: ``np.corrcoef`` RDMs, ``scipy.stats.spearmanr`` per point and one ``spearmanr`` per bootstrap resample;
encoding: himalaya ``RidgeCV`` / ``KernelRidgeCV`` on data z-scored with fit-split statistics, a numpy bootstrap
loop over the test predictions. Inputs are the in-memory (projected and full) activations of every point.
"""

from __future__ import annotations

import time
import warnings

import numpy as np


def bootstrap_indices(n: int, iterations: int, seed: int) -> np.ndarray:
    """The study's resampling (docs/evaluation.md): per iteration the first 90 % of a random order, sorted."""
    keys = np.random.default_rng(seed).random((iterations, n))
    return np.sort(np.argsort(keys, axis=1, kind="stable")[:, :int(round(0.9 * n))], axis=1)


def percentile_ci(distribution: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(distribution, [2.5, 97.5])
    return float(low), float(high)


def reference_rsa(projected, full, names, y_train, y_test, n_train, indices, seed) -> dict:
    """Selection on (up to) 1,000 seeded training stimuli, exact test RDM, SciPy bootstrap loop."""
    import scipy.stats

    def rdm(x):
        return 1.0 - np.corrcoef(x)

    def upper(matrix):
        return matrix[np.triu_indices(matrix.shape[0], k=1)]

    rows = np.arange(n_train)
    if n_train > 1000:
        rows = np.sort(np.random.default_rng(seed).choice(n_train, 1000, replace=False))
    neural = upper(rdm(y_train[rows]))
    scores = {name: float(scipy.stats.spearmanr(upper(rdm(projected[name][rows])), neural).statistic)
              for name in names}
    best = max(names, key=lambda name: (scores[name], -names.index(name)))
    model_rdm, neural_rdm = rdm(full[best][n_train:]), rdm(y_test)
    score = float(scipy.stats.spearmanr(upper(model_rdm), upper(neural_rdm)).statistic)
    keep = np.triu_indices(indices.shape[1], k=1)
    started = time.perf_counter()
    distribution = np.array([scipy.stats.spearmanr(model_rdm[np.ix_(kept, kept)][keep],
                                                   neural_rdm[np.ix_(kept, kept)][keep]).statistic
                             for kept in indices])
    return {"selection": scores, "selected": best, "score": score, "bootstrap_s": time.perf_counter() - started,
            **dict(zip(("ci_low", "ci_high"), percentile_ci(distribution)))}


def ridge_predictions(x_fit, y_fit, x_eval, kind: str) -> np.ndarray:
    """himalaya ridge (per-target alpha by 5-fold CV, no intercept) on data z-scored with fit statistics.

    Feature columns constant on the fit split are set to 0, as visreps does (docs/method.md §6): (x − mean) /
    (0 + 1e-8) would scale their evaluation rows by 1e8, and himalaya's SVD leaves ~1e-9 weights on them, which
    that factor turns into prediction errors (dead fc*_post units, up to 1e-5 in r).
    """
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidgeCV
    from himalaya.ridge import RidgeCV

    backend = set_backend("numpy")
    x_mean, x_scale = x_fit.mean(0, dtype=np.float64), x_fit.std(0, dtype=np.float64) + 1e-8
    y_mean, y_scale = y_fit.mean(0, dtype=np.float64), y_fit.std(0, dtype=np.float64) + 1e-8
    constant = x_fit.max(0) == x_fit.min(0)
    z_fit, z_eval = (((x - x_mean) / x_scale).astype(np.float32) for x in (x_fit, x_eval))
    z_fit[:, constant] = z_eval[:, constant] = 0
    alphas = np.logspace(-10, 10, 20)
    model = (KernelRidgeCV(alphas=alphas, kernel="linear", cv=5) if kind == "kernel"
             else RidgeCV(alphas=alphas, cv=5, solver_params={"warn": False}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(z_fit, ((y_fit - y_mean) / y_scale).astype(np.float32))
        return backend.to_numpy(model.predict(z_eval))


def pearson_per_column(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r per column, 0 where the predictions are constant (alpha → ∞; visreps' definition)."""
    constant = (p == p[:1]).all(0)
    p = p.astype(np.float64) - p.mean(0, dtype=np.float64)
    y = y.astype(np.float64) - y.mean(0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(constant, 0.0, (p * y).sum(0) / np.sqrt((p * p).sum(0) * (y * y).sum(0)))


def reference_encoding(projected, names, y_train, y_test, n_train, indices, seed, ridge: str) -> dict:
    """Seeded 80/20 selection split, refit on all training stimuli, numpy bootstrap loop on the predictions."""
    kind = ridge
    order = np.random.default_rng(seed).permutation(n_train)
    n_validation = int(round(0.2 * n_train))
    validation, fit = np.sort(order[:n_validation]), np.sort(order[n_validation:])
    scores = {}
    for name in names:
        x = projected[name][:n_train]
        scores[name] = float(pearson_per_column(ridge_predictions(x[fit], y_train[fit], x[validation], kind),
                                                y_train[validation]).mean())
    best = max(names, key=lambda name: (scores[name], -names.index(name)))
    predictions = ridge_predictions(projected[best][:n_train], y_train, projected[best][n_train:], kind)
    score = float(pearson_per_column(predictions, y_test).mean())
    started = time.perf_counter()
    distribution = np.array([pearson_per_column(predictions[kept], y_test[kept]).mean() for kept in indices])
    return {"selection": scores, "selected": best, "score": score, "bootstrap_s": time.perf_counter() - started,
            **dict(zip(("ci_low", "ci_high"), percentile_ci(distribution)))}
