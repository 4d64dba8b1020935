"""Layer selection on the selection (training) split only.

``select_layer`` accepts nothing but a ``TrainSplit``: the test split is a different type (``TestSplit``)
that it refuses, and it has no other data argument, so test stimuli cannot reach the selection.

- RSA: a seeded subsample of ``n_rsa_stimuli`` (1,000) training stimuli (all if fewer):
  ``sorted(default_rng(seed).choice(n, n_rsa_stimuli, replace=False))``; score = comparison of the layer's
  1 − Pearson RDM (features projected to ``projection_dim`` when wider) with the responses' RDM.
- Encoding: a seeded 80/20 fit/validation split of the training stimuli (``default_rng(seed).permutation``;
  the first round(0.2·n) are validation); score = mean Pearson r over targets on validation of the ridge
  model (``encoding.encoding_score``) fit on the projected features of the fit part.
The best layer is the argmax (the first one listed on ties); every layer's score is returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from visreps.alignment.compare import check_compare_method, compare_rdms
from visreps.alignment.encoding import encoding_score
from visreps.alignment.projection import DEFAULT_COMPONENTS, SparseProjection, sparse_random_projection
from visreps.alignment.rdm import rdm_pearson
from visreps.alignment.validation import MIN_STIMULI, AlignmentInputError, check_fraction, check_matrix

ANALYSES = ("rsa", "encoding")
DEFAULT_RSA_STIMULI = 1000
DEFAULT_VALIDATION_FRACTION = 0.2


def layer_shapes(features: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Shape of every layer's features, read without loading them when the mapping offers ``.shapes``."""
    shapes = getattr(features, "shapes", None)
    if shapes is not None:
        return {name: tuple(shape) for name, shape in shapes.items()}
    return {name: tuple(getattr(value, "shape", np.shape(value))) for name, value in features.items()}


def _check_split(features: Mapping[str, Any], responses: Any, what: str) -> dict[str, tuple[int, ...]]:
    if not isinstance(features, Mapping) or len(features) == 0:
        raise AlignmentInputError(f"{what} features must be a non-empty mapping layer name → stimuli × features")
    n_stimuli = int(np.shape(responses)[0]) if np.ndim(responses) else 0
    if np.ndim(responses) != 2:
        raise AlignmentInputError(f"{what} responses must be stimuli × units, got shape {np.shape(responses)}")
    if n_stimuli < MIN_STIMULI:
        raise AlignmentInputError(f"{what} responses have {n_stimuli} stimuli; at least {MIN_STIMULI} are needed")
    shapes = layer_shapes(features)
    for name, shape in shapes.items():
        if len(shape) != 2 or shape[0] != n_stimuli:
            raise AlignmentInputError(
                f"{what} features of layer {name!r} have shape {shape}; expected ({n_stimuli}, features) "
                f"to match the {n_stimuli} stimuli of the {what} responses"
            )
    return shapes


@dataclass(frozen=True, eq=False)
class TrainSplit:
    """The selection/training split: layer name → stimuli × features, and stimuli × units responses."""

    features: Mapping[str, Any]
    responses: Any
    shapes: dict[str, tuple[int, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", _check_split(self.features, self.responses, "train"))


@dataclass(frozen=True, eq=False)
class TestSplit:
    """The held-out test split; optionally stimuli × repetitions × units responses for a noise ceiling.
    Deliberately not a TrainSplit: selection refuses it."""

    __test__ = False  # not a pytest test class

    features: Mapping[str, Any]
    responses: Any
    repetitions: Any | None = None
    shapes: dict[str, tuple[int, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", _check_split(self.features, self.responses, "test"))


@dataclass
class LayerSelection:
    """The chosen layer and every candidate layer's selection score."""

    best_layer: str
    scores: dict[str, float]
    analysis: str
    details: dict[str, Any] = field(default_factory=dict)


def check_layers(available: Sequence[str], requested: Sequence[str] | None, what: str = "features") -> list[str]:
    """``requested`` (default: all ``available``), refusing names that do not exist."""
    if requested is None:
        return list(available)
    missing = [name for name in requested if name not in available]
    if missing or not requested:
        raise AlignmentInputError(
            f"layer(s) {missing or requested} not found in the {what}; available: {', '.join(available)}"
        )
    return list(requested)


def projection_for(n_features: int, projection_dim: int | None, seed: int) -> SparseProjection:
    """The seeded projection used for selection and encoding (identity when ``projection_dim`` is None/0)."""
    return sparse_random_projection(n_features, projection_dim or n_features, seed=seed)


def _layer_rows(features: Mapping[str, Any], layer: str, rows: np.ndarray | None, projection_dim: int | None,
                projection_seed: int, device: Any) -> torch.Tensor:
    """Projected features of ``layer`` (optionally only ``rows``), float32 on ``device``."""
    data = features[layer]
    if rows is not None:
        data = data[rows] if isinstance(data, (np.ndarray, torch.Tensor)) else np.asarray(data)[rows]
    projection = projection_for(int(np.shape(data)[1]), projection_dim, projection_seed)
    return projection.project(data, device=device, name=f"features of layer {layer!r}")


def select_layer(train: TrainSplit, *, analysis: str, compare: str = "spearman", seed: int = 0,
                 layers: Sequence[str] | None = None, n_rsa_stimuli: int = DEFAULT_RSA_STIMULI,
                 validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
                 projection_dim: int | None = DEFAULT_COMPONENTS, projection_seed: int | None = None,
                 ridge_options: dict[str, Any] | None = None, device: Any = None,
                 progress: bool = False) -> LayerSelection:
    """Pick the best layer for ``analysis`` ("rsa" or "encoding") on the training split (module docstring)."""
    if not isinstance(train, TrainSplit):
        raise TypeError(
            f"select_layer only accepts a TrainSplit (the selection split), got {type(train).__name__}; "
            "the test split must never be used to choose a layer"
        )
    if analysis not in ANALYSES:
        raise AlignmentInputError(f"unknown analysis {analysis!r}; choose one of {', '.join(ANALYSES)}")
    check_compare_method(compare)
    names = check_layers(list(train.shapes), layers, "train features")
    projection_seed = seed if projection_seed is None else projection_seed
    responses = check_matrix(train.responses, "train responses")
    n_stimuli = responses.shape[0]
    rng = np.random.default_rng(seed)
    scores: dict[str, float] = {}
    if analysis == "rsa":
        rows = None
        if n_stimuli > n_rsa_stimuli:
            rows = np.sort(rng.choice(n_stimuli, n_rsa_stimuli, replace=False))
        neural = rdm_pearson(responses if rows is None else responses[torch.from_numpy(rows)],
                             on_constant="error", name="train responses")
        for layer in tqdm(names, desc="RSA layer selection", disable=not progress):
            model = rdm_pearson(_layer_rows(train.features, layer, rows, projection_dim, projection_seed, device),
                                name=f"features of layer {layer!r}")
            scores[layer] = compare_rdms(model, neural.to(model.device), compare)
        details = {"selection_stimuli": n_stimuli if rows is None else int(rows.size)}
    else:
        fraction = check_fraction(validation_fraction, "validation_fraction")
        order = rng.permutation(n_stimuli)
        n_validation = int(round(fraction * n_stimuli))
        validation, fit = np.sort(order[:n_validation]), np.sort(order[n_validation:])
        if validation.size < MIN_STIMULI or fit.size < MIN_STIMULI:
            raise AlignmentInputError(
                f"an {1 - fraction:.0%}/{fraction:.0%} split of {n_stimuli} training stimuli leaves "
                f"{fit.size} fit and {validation.size} validation stimuli; at least {MIN_STIMULI} each are needed"
            )
        y = responses.cpu()
        for layer in tqdm(names, desc="encoding layer selection", disable=not progress):
            x = _layer_rows(train.features, layer, None, projection_dim, projection_seed, device)
            fit_t, val_t = torch.from_numpy(fit).to(x.device), torch.from_numpy(validation).to(x.device)
            scores[layer] = encoding_score(x[fit_t], y[fit], x[val_t], y[validation],
                                           device=device, **(ridge_options or {})).mean_r
        details = {"fit_stimuli": int(fit.size), "validation_stimuli": int(validation.size)}
    best = max(names, key=lambda name: (scores[name], -names.index(name)))
    return LayerSelection(best, scores, analysis, details)
