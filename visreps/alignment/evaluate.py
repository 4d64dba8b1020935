"""Whole alignment evaluations: select the layer on the training split, score it on the test split.

- RSA: the selected layer's exact (unprojected) test activations → 1 − Pearson RDM, compared with the
  test responses' RDM (Spearman or Kendall τ-a), bootstrap CI (``bootstrap_rsa``).
- Encoding: the selected layer's projected features; ridge refit on all training stimuli, test predictions,
  mean Pearson r over targets, bootstrap CI on the cached predictions (``bootstrap_encoding``).
With test repetitions a split-half noise ceiling and ceiling-normalised score and CI are added.
Seeds: ``seed`` drives the selection subsample/split, the projection and the bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visreps.alignment.bootstrap import BootstrapResult, bootstrap_encoding
from visreps.alignment.bootstrap_rsa import bootstrap_rsa
from visreps.alignment.ceiling import NoiseCeiling, encoding_noise_ceiling, normalise_score, rsa_split_half_ceiling
from visreps.alignment.compare import compare_rdms
from visreps.alignment.encoding import encoding_score
from visreps.alignment.projection import DEFAULT_COMPONENTS
from visreps.alignment.rdm import rdm_pearson
from visreps.alignment.selection import (
    LayerSelection,
    TestSplit,
    TrainSplit,
    check_layers,
    projection_for,
    select_layer,
)
from visreps.alignment.validation import AlignmentInputError, check_matrix


@dataclass
class AlignmentResult:
    """Everything one evaluation produces; ``to_dict`` gives the JSON written by ``visreps score``."""

    analysis: str
    selected_layer: str
    selection_scores: dict[str, float]
    score: float
    bootstrap: BootstrapResult | None
    compare: str | None = None
    noise_ceiling: NoiseCeiling | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    per_target_r: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "analysis": self.analysis,
            "selected_layer": self.selected_layer,
            "selection_scores": {k: float(v) for k, v in self.selection_scores.items()},
            "score": float(self.score),
            "ci_low": self.bootstrap.ci_low if self.bootstrap else None,
            "ci_high": self.bootstrap.ci_high if self.bootstrap else None,
            "ci_level": self.bootstrap.ci_level if self.bootstrap else None,
            "n_bootstrap": self.bootstrap.resampling.n_iterations if self.bootstrap else 0,
            "bootstrap_fraction": self.bootstrap.resampling.fraction if self.bootstrap else None,
            "bootstrap_replace": self.bootstrap.resampling.replace if self.bootstrap else None,
        }
        if self.compare:
            out["compare"] = self.compare
        if self.noise_ceiling is not None:
            out.update(self.noise_ceiling.to_dict())
            ceiling = self.noise_ceiling.ceiling
            if not (np.isfinite(ceiling) and ceiling > 0):  # unreliable data: a ratio would be meaningless
                out["normalisation"] = f"undefined: noise ceiling {ceiling} is not positive"
                out.update(self.extras)
                return out
            out["score_normalised"] = normalise_score(self.score, ceiling)
            if self.bootstrap:
                out["ci_low_normalised"] = normalise_score(self.bootstrap.ci_low, self.noise_ceiling.ceiling)
                out["ci_high_normalised"] = normalise_score(self.bootstrap.ci_high, self.noise_ceiling.ceiling)
        out.update(self.extras)
        return out


def _selection(train: TrainSplit, test: TestSplit, analysis: str, layer: str | None, **options: Any
               ) -> LayerSelection:
    if not isinstance(test, TestSplit):
        raise TypeError(f"the test split must be a TestSplit, got {type(test).__name__}")
    if layer is not None:
        check_layers(list(train.shapes), [layer], "train features")
        check_layers(list(test.shapes), [layer], "test features")
        return LayerSelection(layer, {}, analysis, {"selection": "given"})
    selection = select_layer(train, analysis=analysis, **options)
    check_layers(list(test.shapes), [selection.best_layer], "test features")
    return selection


def score_rsa_test(test: TestSplit, layer: str, *, compare: str = "spearman", seed: int = 0,
                   n_bootstrap: int = 1000, bootstrap_fraction: float | None = None, replace: bool = False,
                   ci_level: float = 0.95, device: Any = None) -> AlignmentResult:
    """RSA test score of one given layer (no selection here: e.g. a layer chosen on another dataset), the
    layer's test features vs the test responses, with bootstrap CI and (given repetitions) split-half ceiling."""
    if not isinstance(test, TestSplit):
        raise TypeError(f"the test split must be a TestSplit, got {type(test).__name__}")
    check_layers(list(test.shapes), [layer], "test features")
    neural = rdm_pearson(check_matrix(test.responses, "test responses"), on_constant="error",
                         name="test responses", device=device)
    model = rdm_pearson(test.features[layer], device=device, name=f"test features of layer {layer!r}")
    _check_repetitions_match(test)
    ceiling = rsa_split_half_ceiling(test.repetitions, method=compare, seed=seed) \
        if test.repetitions is not None else None
    if n_bootstrap > 0:
        result = bootstrap_rsa(model, neural, method=compare, n_iterations=n_bootstrap, fraction=bootstrap_fraction,
                               replace=replace, ci_level=ci_level, seed=seed, device=device)
        score = result.estimate
    else:
        result, score = None, compare_rdms(model, neural, compare)
    return AlignmentResult("rsa", layer, {}, score, result, compare, ceiling, {"n_test_stimuli": int(neural.shape[0])})


def evaluate_rsa(train: TrainSplit, test: TestSplit, *, compare: str = "spearman", seed: int = 0,
                 n_bootstrap: int = 1000, bootstrap_fraction: float | None = None, replace: bool = False,
                 ci_level: float = 0.95, layer: str | None = None, n_rsa_stimuli: int = 1000,
                 projection_dim: int | None = DEFAULT_COMPONENTS, device: Any = None,
                 progress: bool = False) -> AlignmentResult:
    """RSA: select on ``train`` (unless ``layer`` is given), score the exact test activations with a CI."""
    selection = _selection(train, test, "rsa", layer, compare=compare, seed=seed, n_rsa_stimuli=n_rsa_stimuli,
                           projection_dim=projection_dim, device=device, progress=progress)
    result = score_rsa_test(test, selection.best_layer, compare=compare, seed=seed, n_bootstrap=n_bootstrap,
                            bootstrap_fraction=bootstrap_fraction, replace=replace, ci_level=ci_level, device=device)
    result.selection_scores = selection.scores
    result.extras.update(selection.details)
    return result


def evaluate_encoding(train: TrainSplit, test: TestSplit, *, seed: int = 0, n_bootstrap: int = 1000,
                      bootstrap_fraction: float | None = None, replace: bool = False, ci_level: float = 0.95,
                      layer: str | None = None, validation_fraction: float = 0.2,
                      projection_dim: int | None = DEFAULT_COMPONENTS, ridge_options: dict[str, Any] | None = None,
                      device: Any = None, progress: bool = False) -> AlignmentResult:
    """Encoding: select on ``train``, refit ridge on all training stimuli, score test predictions with a CI."""
    selection = _selection(train, test, "encoding", layer, seed=seed, validation_fraction=validation_fraction,
                           projection_dim=projection_dim, ridge_options=ridge_options, device=device,
                           progress=progress)
    name = selection.best_layer
    train_shape, test_shape = train.shapes[name], test.shapes[name]
    if train_shape[1] != test_shape[1]:
        raise AlignmentInputError(
            f"layer {name!r} has {train_shape[1]} features in the train split but {test_shape[1]} in the test split"
        )
    _check_repetitions_match(test)
    projection = projection_for(train_shape[1], projection_dim, seed)
    x_train = projection.project(train.features[name], device=device, name=f"train features of layer {name!r}")
    x_test = projection.project(test.features[name], device=device, name=f"test features of layer {name!r}")
    y_test = check_matrix(test.responses, "test responses")
    fitted = encoding_score(x_train, train.responses, x_test, y_test, device=device, **(ridge_options or {}))
    ceiling = encoding_noise_ceiling(test.repetitions, seed=seed) if test.repetitions is not None else None
    result = None
    if n_bootstrap > 0:
        result = bootstrap_encoding(fitted.predictions, y_test, n_iterations=n_bootstrap, fraction=bootstrap_fraction,
                                    replace=replace, ci_level=ci_level, seed=seed, device=device)
    extras = {"n_test_stimuli": int(y_test.shape[0]), "n_targets": int(y_test.shape[1]),
              "median_alpha": float(np.median(fitted.best_alphas)), **projection.describe(), **selection.details}
    return AlignmentResult("encoding", name, selection.scores, fitted.mean_r, result, None, ceiling, extras,
                           per_target_r=fitted.per_target_r)


def _check_repetitions_match(test: TestSplit) -> None:
    if test.repetitions is None:
        return
    shape, responses = np.shape(test.repetitions), np.shape(test.responses)
    if len(shape) != 3 or shape[0] != responses[0] or shape[2] != responses[1]:
        raise AlignmentInputError(
            f"test repetitions have shape {shape}; expected ({responses[0]}, repetitions, {responses[1]}) "
            "to match the test responses (stimuli × units)"
        )
