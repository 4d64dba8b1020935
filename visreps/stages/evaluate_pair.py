"""Score one (subject, region) of a dataset against a model's cached features: select, test, CI, ceiling.

Selection uses the subject's training stimuli only (``select_layer`` takes nothing else); the test split is the
subject's own test stimuli (NSD: that subject's shared images), the same for RSA and encoding. RSA scores the
selected point's exact activations of the test stimuli (re-extracted for them alone, into an on-disk cache;
the RDM is accumulated over column chunks of it), encoding the projected features the selection used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from visreps.activations import CachedFeatures, FeatureRows
from visreps.alignment.ceiling import NoiseCeiling, encoding_noise_ceiling, rsa_split_half_ceiling
from visreps.alignment.evaluate import AlignmentResult, evaluate_encoding, evaluate_rsa, score_rsa_test
from visreps.alignment.selection import LayerSelection, TestSplit, TrainSplit, select_layer
from visreps.alignment.validation import AlignmentInputError
from visreps.data.base import Responses
from visreps.stages.evaluate_config import EvaluateConfig

#: metrics of a pair, in the order of the tidy table
PAIR_METRICS = ("score", "ci_low", "ci_high", "noise_ceiling", "score_normalised", "ci_low_normalised",
                "ci_high_normalised", "selection_score")


@dataclass
class PairResult:
    """One (subject, region, analysis): the selection, the alignment result and what the run logs."""

    subject: str
    region: str
    analysis: str
    selection: LayerSelection
    result: AlignmentResult
    points: list[str]
    test_ids: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        """Finite numbers of the pair (score, CI, ceiling, normalised score and CI, selected point's score)."""
        summary = self.result.to_dict()
        values = {name: summary.get(name) for name in PAIR_METRICS[:-1]}
        values["selection_score"] = self.selection.scores.get(self.selection.best_layer)
        values["selected_point_index"] = self.points.index(self.selection.best_layer)
        return {name: float(value) for name, value in values.items()
                if isinstance(value, (int, float, np.floating)) and np.isfinite(value)}

    def selection_table(self) -> pd.DataFrame:
        return pd.DataFrame({"point": self.points, "point_index": range(len(self.points)),
                             "selection_score": [self.selection.scores.get(point, np.nan) for point in self.points],
                             "selected": [point == self.selection.best_layer for point in self.points]})

    def tidy_rows(self) -> list[dict[str, Any]]:
        return [{"subject": self.subject, "region": self.region, "analysis": self.analysis,
                 "selected_point": self.selection.best_layer, "metric": name, "value": value}
                for name, value in self.metrics.items()]

    def bootstrap_table(self) -> pd.DataFrame | None:
        boot = self.result.bootstrap
        if boot is None:
            return None
        return pd.DataFrame({"iteration": np.arange(boot.distribution.size), "score": boot.distribution})


def dataset_ceiling(responses: Responses) -> NoiseCeiling | None:
    """The dataset's own encoding ceiling (e.g. NSD ncsnr): mean over units of √(explainable variance share)."""
    if responses.noise_ceiling is None:
        return None
    per_unit = np.sqrt(np.clip(np.asarray(responses.noise_ceiling, dtype=np.float64), 0.0, 1.0))
    return NoiseCeiling(float(per_unit.mean()), float(np.mean(np.square(per_unit))), "dataset", per_unit)


def complete_repetitions(repetitions: np.ndarray | None) -> np.ndarray | None:
    """The stimuli whose every repetition is finite (NSD: images shown fewer times carry NaN), or None when fewer
    than 3 such stimuli or 2 repetitions remain."""
    if repetitions is None:
        return None
    kept = repetitions[np.isfinite(repetitions).all(axis=(1, 2))]
    return kept if kept.shape[0] >= 3 and kept.shape[1] >= 2 else None


def noise_ceiling(config: EvaluateConfig, analysis: str, responses: Responses) -> tuple[NoiseCeiling | None, str]:
    """(ceiling, how): the dataset's own (encoding, when it has one), else split-half of the complete repetitions;
    None with the reason when the data allow none."""
    if analysis == "encoding" and responses.noise_ceiling is not None:
        return dataset_ceiling(responses), "dataset"
    repetitions = complete_repetitions(responses.test_repetitions)
    if repetitions is None:
        return None, "no test repetitions" if responses.test_repetitions is None else "too few complete repetitions"
    try:
        if analysis == "rsa":
            return rsa_split_half_ceiling(repetitions, method=config.compare, seed=config.seed), "split-half"
        return encoding_noise_ceiling(repetitions, seed=config.seed), "split-half"
    except AlignmentInputError as error:
        return None, f"undefined: {error}"


def score_pair(config: EvaluateConfig, analysis: str, responses: Responses, features: CachedFeatures,
               points: list[str], exact_test_features: Callable[[str, list[str]], Any]) -> PairResult:
    """Select on the training stimuli, score the test stimuli, with CI and ceiling (module docstring).

    ``exact_test_features(point, test_ids)`` returns the (n_test, D) exact activations of one point (RSA).
    """
    train_rows, test_rows = features.rows(responses.train_ids), features.rows(responses.test_ids)
    train = TrainSplit(FeatureRows(features, train_rows, points), responses.train)
    options: dict[str, Any] = {"seed": config.seed, "projection_dim": None, "progress": config.progress}
    if analysis == "rsa":
        selection = select_layer(train, analysis="rsa", compare=config.compare, n_rsa_stimuli=config.n_rsa_stimuli,
                                 **options)
        best = selection.best_layer
        test = TestSplit({best: exact_test_features(best, list(responses.test_ids))}, responses.test)
        result = evaluate_rsa(TrainSplit(FeatureRows(features, train_rows, [best]), responses.train), test,
                              compare=config.compare, n_bootstrap=config.n_bootstrap,
                              bootstrap_fraction=config.bootstrap_fraction, replace=config.bootstrap_replace,
                              ci_level=config.ci_level, layer=best, seed=config.seed, projection_dim=None)
    else:
        selection = select_layer(train, analysis="encoding", validation_fraction=config.validation_fraction, **options)
        best = selection.best_layer
        test = TestSplit(FeatureRows(features, test_rows, [best]), responses.test)
        result = evaluate_encoding(TrainSplit(FeatureRows(features, train_rows, [best]), responses.train), test,
                                   n_bootstrap=config.n_bootstrap, bootstrap_fraction=config.bootstrap_fraction,
                                   replace=config.bootstrap_replace, ci_level=config.ci_level, layer=best,
                                   seed=config.seed, projection_dim=None)
    result.noise_ceiling, how = noise_ceiling(config, analysis, responses)
    result.extras["ceiling_source"] = how
    if result.noise_ceiling is not None and how == "split-half":
        result.extras["ceiling_stimuli"] = int(complete_repetitions(responses.test_repetitions).shape[0])
    result.selection_scores = dict(selection.scores)
    result.extras.update(selection.details)
    return PairResult(responses.subject, responses.region, analysis, selection, result, points,
                      list(responses.test_ids))


def score_selected_pair(config: EvaluateConfig, responses: Responses, point: str, points: list[str],
                        exact_test_features: Callable[[str, list[str]], Any]) -> PairResult:
    """RSA of a test-only dataset (NSD-synthetic) at a point selected elsewhere (the NSD evaluation)."""
    test = TestSplit({point: exact_test_features(point, list(responses.test_ids))}, responses.test)
    result = score_rsa_test(test, point, compare=config.compare, seed=config.seed, n_bootstrap=config.n_bootstrap,
                            bootstrap_fraction=config.bootstrap_fraction, replace=config.bootstrap_replace,
                            ci_level=config.ci_level)
    result.noise_ceiling, how = noise_ceiling(config, "rsa", responses)
    result.extras["ceiling_source"] = how
    selection = LayerSelection(point, {}, "rsa", {"selection": "NSD evaluation of the same model"})
    points = list(points) if point in points else [*points, point]
    return PairResult(responses.subject, responses.region, "rsa", selection, result, points, list(responses.test_ids))
