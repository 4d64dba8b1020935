"""Ridge encoding against himalaya RidgeCV, scikit-learn Ridge/KFold and a straightforward CV loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from himalaya.backend import set_backend
from himalaya.ridge import RidgeCV
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from visreps.alignment import (
    DEFAULT_ALPHAS,
    AlignmentInputError,
    encoding_score,
    fit_ridge_cv,
    kfold_splits,
    pearson_columns,
)


def make_data(n: int, p: int, targets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) * rng.uniform(0.5, 2, p) + rng.uniform(-1, 1, p)
    signal = rng.uniform(0, 1.5, targets) * (rng.random(targets) < 0.7)
    y = x @ (rng.standard_normal((p, targets)) * signal / np.sqrt(p)) + rng.standard_normal((n, targets))
    return x, y + rng.uniform(-3, 3, targets)


def zscore(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(0)) / (a.std(0) + 1e-8)


def himalaya_fit(x, y, backend="numpy"):
    set_backend(backend)
    try:
        model = RidgeCV(alphas=DEFAULT_ALPHAS, cv=5, solver_params={"warn": False})
        model.fit(zscore(x), zscore(y))
        as_numpy = (lambda a: a.cpu().numpy()) if backend.startswith("torch") else np.asarray
        return as_numpy(model.best_alphas_), as_numpy(model.coef_), as_numpy(model.cv_scores_)
    finally:
        set_backend("numpy")


@pytest.mark.parametrize("shape", [(150, 25, 12), (45, 90, 10), (100, 90, 6)], ids=["primal", "dual", "mixed"])
def test_matches_himalaya_ridgecv_float64(shape):
    x, y = make_data(*shape)
    fit = fit_ridge_cv(x, y, dtype=torch.float64)
    alphas, coef, cv_scores = himalaya_fit(x, y)
    np.testing.assert_allclose(fit.best_alphas, alphas, rtol=1e-9)
    np.testing.assert_allclose(fit.weights.numpy(), coef, atol=1e-8)
    np.testing.assert_allclose(fit.cv_scores, cv_scores, atol=1e-10)


def test_matches_himalaya_torch_backend_float32():
    x, y = make_data(200, 30, 20, seed=1)
    fit = fit_ridge_cv(x.astype(np.float32), y.astype(np.float32))
    alphas, coef, _ = himalaya_fit(x.astype(np.float32), y.astype(np.float32), "torch")
    exact_alphas, _, _ = himalaya_fit(x, y)  # float64: the alphas float32 solvers approximate
    # float32 near-ties (targets without signal, flat scores at large alphas) may pick a neighbouring alpha:
    # visreps must recover the float64 choice at least as often as himalaya's float32 torch backend does
    ours, theirs = (np.isclose(found, exact_alphas, rtol=1e-5).mean() for found in (fit.best_alphas, alphas))
    assert ours >= max(theirs, 0.9)
    same = np.isclose(fit.best_alphas, alphas, rtol=1e-5)
    assert same.mean() >= 0.8
    scale = np.abs(coef).max()
    np.testing.assert_allclose(fit.weights.numpy()[:, same], coef[:, same], atol=1e-4 * scale)


def test_kfold_splits_equal_sklearn():
    for n in (25, 27):
        ours = kfold_splits(n, 5)
        for (train, val), (ref_train, ref_val) in zip(ours, KFold(5).split(np.zeros(n))):
            np.testing.assert_array_equal(train, ref_train)
            np.testing.assert_array_equal(val, ref_val)
    shuffled = kfold_splits(27, 5, shuffle_seed=3)
    assert sorted(np.concatenate([v for _, v in shuffled]).tolist()) == list(range(27))
    assert not np.array_equal(shuffled[0][1], ours[0][1])
    assert all(np.intersect1d(t, v).size == 0 for t, v in shuffled)


def test_alpha_choice_equals_a_straightforward_sklearn_cv_loop():
    x, y = make_data(120, 15, 9, seed=2)
    xz, yz = zscore(x), zscore(y)
    scores = np.zeros((len(DEFAULT_ALPHAS), y.shape[1]))
    for train, val in KFold(5).split(xz):
        for a, alpha in enumerate(DEFAULT_ALPHAS):
            pred = Ridge(alpha=alpha, fit_intercept=False, solver="svd").fit(xz[train], yz[train]).predict(xz[val])
            scores[a] -= ((yz[val] - pred) ** 2).mean(0) / 5
    expected = DEFAULT_ALPHAS[np.argmax(scores + 1e-10 * np.log(DEFAULT_ALPHAS)[:, None], axis=0)]
    fit = fit_ridge_cv(x, y, dtype=torch.float64)
    np.testing.assert_allclose(fit.best_alphas, expected)
    for t in range(y.shape[1]):
        ridge = Ridge(alpha=fit.best_alphas[t], fit_intercept=False, solver="svd").fit(xz, yz[:, t])
        np.testing.assert_allclose(fit.weights[:, t].numpy(), ridge.coef_, atol=1e-9)


def test_target_batches_and_fold_shuffling_are_consistent():
    x, y = make_data(80, 12, 11, seed=3)
    whole = fit_ridge_cv(x, y, dtype=torch.float64)
    batched = fit_ridge_cv(x, y, dtype=torch.float64, target_batch=3)
    np.testing.assert_array_equal(whole.best_alphas, batched.best_alphas)
    np.testing.assert_allclose(whole.weights.numpy(), batched.weights.numpy(), atol=1e-12)
    shuffled = fit_ridge_cv(x, y, dtype=torch.float64, shuffle_seed=0)
    assert shuffled.cv_scores.shape == (11,)


def test_zscoring_in_column_blocks_equals_numpy(monkeypatch):
    from visreps.alignment import encoding

    x, _ = make_data(70, 23, 1, seed=6)
    monkeypatch.setattr(encoding, "STANDARDIZE_CHUNK_BYTES", 70 * 8 * 4)  # 4 columns per block
    standardizer = encoding.Standardizer.fit(torch.from_numpy(x))
    np.testing.assert_allclose(standardizer.apply(torch.from_numpy(x), torch.float64).numpy(), zscore(x),
                               atol=1e-12)
    np.testing.assert_allclose(standardizer.apply(torch.from_numpy(x[:5, 6:17]), torch.float64,
                                                  slice(6, 17)).numpy(), zscore(x)[:5, 6:17], atol=1e-12)


def test_prediction_uses_fit_statistics_only():
    x, y = make_data(90, 10, 4, seed=4)
    fit = fit_ridge_cv(x, y, dtype=torch.float64)
    shifted = x[:20] + 100.0
    z = (shifted - x.mean(0)) / (x.std(0) + 1e-8)
    expected = z @ fit.weights.numpy() * (y.std(0) + 1e-8) + y.mean(0)
    np.testing.assert_allclose(fit.predict(shifted).numpy(), expected, rtol=1e-5, atol=1e-3)


def test_encoding_score_per_target_and_mean():
    x, y = make_data(160, 20, 8, seed=5)
    result = encoding_score(x[:120], y[:120], x[120:], y[120:], dtype=torch.float64)
    fit = fit_ridge_cv(x[:120], y[:120], dtype=torch.float64)
    expected = pearson_columns(fit.predict(x[120:]), y[120:]).numpy()
    np.testing.assert_allclose(result.per_target_r, expected, atol=1e-6)
    assert result.mean_r == pytest.approx(expected.mean(), abs=1e-6)
    assert result.predictions.shape == (40, 8) and result.best_alphas.shape == (8,)


def test_bad_input_is_refused():
    x, y = make_data(40, 6, 3)
    with pytest.raises(AlignmentInputError, match="constant targets.*columns 1"):
        fit_ridge_cv(x, np.c_[y[:, :1], np.full(40, 2.0), y[:, 1:]])
    bad = x.copy()
    bad[3, 2] = np.inf
    with pytest.raises(AlignmentInputError, match="fit features has non-finite"):
        fit_ridge_cv(bad, y)
    with pytest.raises(AlignmentInputError, match="40 stimuli but fit responses has 39"):
        fit_ridge_cv(x, y[:39])
    with pytest.raises(AlignmentInputError, match="alphas"):
        fit_ridge_cv(x, y, alphas=[1.0, -1.0])
    with pytest.raises(AlignmentInputError, match="6 columns|fit on 6"):
        fit_ridge_cv(x, y).predict(np.ones((3, 5)))
    with pytest.raises(AlignmentInputError, match="at least 5"):
        fit_ridge_cv(x[:4], y[:4])


@pytest.mark.parametrize("n_samples", [90, 12])  # primal (n ≥ p) and kernel (n < p) solvers
def test_feature_constant_on_fit_stimuli_is_ignored_in_predictions(n_samples):
    """A unit dead (or constant) on every fit stimulus carries nothing the model learnt: firing on a predicted
    stimulus must not change its prediction. Reference: the same fit with the column removed."""
    x, y = make_data(n_samples + 10, 20, 5, seed=8)
    dead = x.copy()
    dead[:n_samples, 3] = 0.0  # a ReLU unit silent on all fit stimuli ...
    dead[n_samples:, 3] = np.linspace(0.5, 2.0, 10)  # ... that fires on the predicted ones
    dead[:, 7] = 0.25  # and a unit constant everywhere
    kept = np.delete(dead, [3, 7], axis=1)
    with_dead = fit_ridge_cv(dead[:n_samples], y[:n_samples])
    without = fit_ridge_cv(kept[:n_samples], y[:n_samples])
    np.testing.assert_array_equal(with_dead.best_alphas, without.best_alphas)
    np.testing.assert_allclose(with_dead.predict(dead[n_samples:]).numpy(), without.predict(kept[n_samples:]).numpy(),
                               rtol=1e-4, atol=1e-4)
