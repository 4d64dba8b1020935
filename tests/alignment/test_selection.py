"""Layer selection on the training split only, and whole RSA/encoding evaluations."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np
import pytest

from visreps.alignment import (
    AlignmentInputError,
    TestSplit,
    TrainSplit,
    compare_rdms,
    encoding_score,
    evaluate_encoding,
    evaluate_rsa,
    rdm_pearson,
    select_layer,
    sparse_random_projection,
)

N_TRAIN, N_TEST, UNITS = 150, 40, 12


class RecordingLayers(Mapping):
    """A layer mapping that records which layers were read."""

    def __init__(self, layers: dict[str, np.ndarray]) -> None:
        self.layers, self.read = layers, []

    def __getitem__(self, name: str) -> np.ndarray:
        self.read.append(name)
        return self.layers[name]

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: value.shape for name, value in self.layers.items()}


@pytest.fixture(scope="module")
def splits() -> dict[str, object]:
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((N_TRAIN + N_TEST, 5))
    responses = latent @ rng.standard_normal((5, UNITS)) + 0.7 * rng.standard_normal((N_TRAIN + N_TEST, UNITS))
    layers = {
        "noise": rng.standard_normal((N_TRAIN + N_TEST, 40)),
        "good": np.tanh(latent @ rng.standard_normal((5, 60))) + 0.1 * rng.standard_normal((N_TRAIN + N_TEST, 60)),
        "wide": latent @ rng.standard_normal((5, 700)) * 0.2 + rng.standard_normal((N_TRAIN + N_TEST, 700)),
    }
    repetitions = responses[N_TRAIN:, None, :] + rng.standard_normal((N_TEST, 4, UNITS))
    return {
        "train_layers": {k: v[:N_TRAIN] for k, v in layers.items()},
        "test_layers": {k: v[N_TRAIN:] for k, v in layers.items()},
        "train_responses": responses[:N_TRAIN],
        "test_responses": repetitions.mean(axis=1),
        "repetitions": repetitions,
    }


def train_split(splits) -> TrainSplit:
    return TrainSplit(splits["train_layers"], splits["train_responses"])


@pytest.mark.parametrize("analysis", ["rsa", "encoding"])
def test_selection_picks_the_informative_layer(splits, analysis):
    selection = select_layer(train_split(splits), analysis=analysis, seed=1, projection_dim=256)
    assert selection.best_layer == "good"
    assert set(selection.scores) == {"noise", "good", "wide"}
    assert selection.scores["good"] > selection.scores["wide"] > selection.scores["noise"] - 0.2
    again = select_layer(train_split(splits), analysis=analysis, seed=1, projection_dim=256)
    assert again.scores == selection.scores


def test_rsa_selection_uses_a_seeded_subsample(splits):
    selection = select_layer(train_split(splits), analysis="rsa", seed=3, n_rsa_stimuli=60, layers=["good"])
    rows = np.sort(np.random.default_rng(3).choice(N_TRAIN, 60, replace=False))
    expected = compare_rdms(rdm_pearson(splits["train_layers"]["good"][rows]),
                            rdm_pearson(splits["train_responses"][rows]))
    assert selection.scores == {"good": pytest.approx(expected, abs=1e-12)}
    assert selection.details["selection_stimuli"] == 60


def test_selection_cannot_receive_the_test_split(splits):
    test = TestSplit(splits["test_layers"], splits["test_responses"])
    with pytest.raises(TypeError, match="only accepts a TrainSplit"):
        select_layer(test, analysis="rsa")
    with pytest.raises(TypeError):
        select_layer({"features": splits["train_layers"], "responses": splits["train_responses"]}, analysis="rsa")
    parameters = inspect.signature(select_layer).parameters
    assert [p for p in parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD] == [parameters["train"]]
    assert not any("test" in name for name in parameters)
    assert not issubclass(TestSplit, TrainSplit) and not issubclass(TrainSplit, TestSplit)


@pytest.mark.parametrize("evaluate", [evaluate_rsa, evaluate_encoding])
def test_evaluation_reads_only_the_selected_test_layer(splits, evaluate):
    recorder = RecordingLayers(splits["test_layers"])
    result = evaluate(train_split(splits), TestSplit(recorder, splits["test_responses"]), n_bootstrap=20,
                      projection_dim=256)
    assert set(recorder.read) == {result.selected_layer}
    scrambled = TestSplit(splits["test_layers"], np.random.default_rng(9).standard_normal((N_TEST, UNITS)))
    other = evaluate(train_split(splits), scrambled, n_bootstrap=20, projection_dim=256)
    assert other.selection_scores == result.selection_scores and other.selected_layer == result.selected_layer


def test_evaluate_rsa_scores_exact_test_activations(splits):
    test = TestSplit(splits["test_layers"], splits["test_responses"], splits["repetitions"])
    result = evaluate_rsa(train_split(splits), test, n_bootstrap=50, seed=2, projection_dim=256)
    expected = compare_rdms(rdm_pearson(splits["test_layers"]["good"]), rdm_pearson(splits["test_responses"]))
    assert result.score == pytest.approx(expected, abs=1e-12)
    out = result.to_dict()
    for key in ("selected_layer", "selection_scores", "score", "ci_low", "ci_high", "n_bootstrap", "analysis",
                "noise_ceiling", "score_normalised"):
        assert key in out
    assert out["n_bootstrap"] == 50 and out["ci_low"] <= out["score"] <= out["ci_high"]
    assert out["score_normalised"] == pytest.approx(out["score"] / out["noise_ceiling"])


def test_evaluate_encoding_refits_on_all_training_stimuli(splits):
    test = TestSplit(splits["test_layers"], splits["test_responses"], splits["repetitions"])
    result = evaluate_encoding(train_split(splits), test, n_bootstrap=30, seed=4, layer="wide", projection_dim=256)
    projection = sparse_random_projection(700, 256, seed=4)
    expected = encoding_score(projection.project(splits["train_layers"]["wide"]), splits["train_responses"],
                              projection.project(splits["test_layers"]["wide"]), splits["test_responses"])
    assert result.score == pytest.approx(expected.mean_r, abs=1e-9)
    np.testing.assert_allclose(result.per_target_r, expected.per_target_r, atol=1e-9)
    assert result.selection_scores == {} and result.to_dict()["projection_components"] == 256


def test_bad_splits_and_layers(splits):
    with pytest.raises(AlignmentInputError, match="layer\\(s\\) \\['conv9'\\] not found"):
        select_layer(train_split(splits), analysis="rsa", layers=["conv9"])
    with pytest.raises(AlignmentInputError, match="not found"):
        evaluate_rsa(train_split(splits), TestSplit(splits["test_layers"], splits["test_responses"]), layer="conv9")
    with pytest.raises(AlignmentInputError, match="layer 'good' have shape \\(149, 60\\)"):
        TrainSplit({**splits["train_layers"], "good": splits["train_layers"]["good"][1:]}, splits["train_responses"])
    with pytest.raises(AlignmentInputError, match="at least 3"):
        TrainSplit({"a": np.ones((2, 4))}, np.ones((2, 3)))
    bad = splits["train_layers"]["good"].copy()
    bad[5, 5] = np.nan
    with pytest.raises(AlignmentInputError, match="layer 'good'.*non-finite"):
        select_layer(TrainSplit({"good": bad}, splits["train_responses"]), analysis="encoding")
    with pytest.raises(AlignmentInputError, match="unknown analysis"):
        select_layer(train_split(splits), analysis="decoding")
    with pytest.raises(AlignmentInputError, match="repetitions have shape"):
        evaluate_rsa(train_split(splits), TestSplit(splits["test_layers"], splits["test_responses"],
                                                    splits["repetitions"][:, :, :3]), n_bootstrap=5)
