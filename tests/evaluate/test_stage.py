"""The evaluate stage on a small demo dataset against a temporary embedded store: the MLflow layout, numbers
equal to a direct computation with the alignment functions, re-use, force, behaviour RSA, and bad input
stopping before extraction with one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from visreps.activations import ActivationReader
from visreps.alignment.evaluate import evaluate_encoding, evaluate_rsa
from visreps.alignment.selection import TestSplit, TrainSplit, projection_for
from visreps.cli import main
from visreps.config import load_config
from visreps.data import open_dataset
from visreps.data.demo import DemoDataConfig, generate_demo_dataset
from visreps.models import create_model, extraction_points, load_file, save_model_file
from visreps.models.transforms import metadata_transform
from visreps.stages.evaluate import EvaluateConfig, run_evaluate_stage
from visreps.tracking import download_artifacts

DEMO = DemoDataConfig(n_train_images=64, image_size=32, n_subjects=2, n_train_stimuli_per_subject=40,
                      n_test_stimuli=24, n_voxels=12, n_images_per_concept=2, behaviour_dims=4,
                      noise_sd_early=0.5, noise_sd_ventral=0.5)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_dataset(DEMO, root=tmp_path_factory.mktemp("demo") / "demo", progress=False).root


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    network = create_model("custom_cnn_small", 4)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return save_model_file(path, network, {"architecture": "custom_cnn_small", "num_classes": 4, "image_size": 32})


def evaluate_config(model_file: Path, demo_root: Path, *overrides: str) -> EvaluateConfig:
    base = [f"model={model_file}", f"dataset_root={demo_root}", "n_bootstrap=100", "n_rsa_stimuli=30",
            "progress=false", "device=cpu", "batch_size=16", "projection_dim=256"]
    return load_config(EvaluateConfig, "evaluate", overrides=base + list(overrides))


def _children(client: MlflowClient, parent_id: str) -> list:
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.`visreps.parent_run_id` = '{parent_id}'")


@pytest.fixture(scope="module")
def both(store, model_file: Path, demo_root: Path) -> dict[str, str]:
    return run_evaluate_stage(evaluate_config(model_file, demo_root, "analysis=both"))


def test_parent_and_child_runs_hold_the_documented_layout(store: MlflowClient, both: dict[str, str]) -> None:
    assert set(both) == {"rsa", "encoding"}
    for analysis, parent_id in both.items():
        parent = store.get_run(parent_id)
        assert parent.info.status == "FINISHED" and parent.data.tags["visreps.complete"] == "true"
        assert parent.data.tags["visreps.analysis"] == analysis and parent.data.tags["visreps.dataset"] == "demo"
        assert len(parent.data.tags["visreps.weights_fingerprint"]) == 16
        assert parent.data.tags["visreps.architecture"] == "custom_cnn_small"
        tidy = pd.read_parquet(download_artifacts(parent_id, "results.parquet"))
        assert set(zip(tidy.subject, tidy.region)) == {(s, r) for s in ("sub-01", "sub-02") for r in ("early", "ventral")}
        assert {"score", "ci_low", "ci_high", "noise_ceiling", "selection_score"} <= set(tidy.metric)
        assert "early.score_mean" in parent.data.metrics and "sub-02.ventral.score" in parent.data.metrics
        dimensionality = pd.read_csv(download_artifacts(parent_id, "effective_dimensionality.csv"))
        assert dimensionality.point_index.tolist() == list(range(14))
        assert ((dimensionality.effective_dimensionality >= 1)
                & (dimensionality.effective_dimensionality <= dimensionality.n_stimuli)).all()
        steps = [m.step for m in store.get_metric_history(parent_id, "effective_dimensionality")]
        assert sorted(steps) == list(range(14))
        children = _children(store, parent_id)
        assert len(children) == 4
        for child in children:
            assert child.data.tags["visreps.complete"] == "true"
            metrics = child.data.metrics
            assert metrics["ci_low"] <= metrics["score"] <= metrics["ci_high"]
            steps = [m.step for m in store.get_metric_history(child.info.run_id, "selection_curve")]
            assert sorted(steps) == list(range(14))
            files = {item.path for item in store.list_artifacts(child.info.run_id)}
            assert {"selection.csv", "bootstrap.parquet", "results.parquet", "test_stimuli.csv", "result.json"} <= files
            assert ("per_unit_r.parquet" in files) == (analysis == "encoding")
            boot = pd.read_parquet(download_artifacts(child.info.run_id, "bootstrap.parquet"))
            assert len(boot) == 100


def _direct_features(model_file: Path, dataset, ids: list[str], point: str) -> torch.Tensor:
    loaded = load_file(model_file)
    transform = metadata_transform(loaded.metadata)
    images = torch.stack([transform(dataset.load_image(dataset.stimulus_images(i)[0]).convert("RGB")) for i in ids])
    with ActivationReader(loaded.model, [point]) as reader:
        return reader(images)[point]



def test_parent_holds_every_pairs_resamples_for_paired_comparisons(store: MlflowClient, both: dict[str, str]) -> None:
    from visreps.stages.evaluate_tracking import stimuli_fingerprint

    fingerprints = {}
    for analysis, parent_id in both.items():
        pairs = pd.read_csv(download_artifacts(parent_id, "pairs.csv"))
        resamples = pd.read_parquet(download_artifacts(parent_id, "bootstrap.parquet"))
        curves = pd.read_parquet(download_artifacts(parent_id, "selection.parquet"))
        assert len(pairs) == 4 and (pairs.n_bootstrap == 100).all() and (pairs.bootstrap_seed == 0).all()
        assert len(resamples) == 4 * 100
        for pair in pairs.itertuples():
            child = store.get_run(pair.child_run_id)
            assert child.data.tags["visreps.parent_run_id"] == parent_id
            assert (child.data.tags["visreps.subject"], child.data.tags["visreps.region"]) == (pair.subject, pair.region)
            assert pair.selected_point == child.data.tags["visreps.selected_point"]
            stimuli = pd.read_csv(download_artifacts(pair.child_run_id, "test_stimuli.csv"), dtype=str).stimulus
            assert pair.test_stimuli_fingerprint == stimuli_fingerprint(list(stimuli)) and pair.n_test_stimuli == len(stimuli)
            own = pd.read_parquet(download_artifacts(pair.child_run_id, "bootstrap.parquet"))
            mine = resamples[(resamples.subject == pair.subject) & (resamples.region == pair.region)]
            np.testing.assert_array_equal(mine.score.to_numpy(), own.score.to_numpy())
            curve = curves[(curves.subject == pair.subject) & (curves.region == pair.region)]
            own_curve = pd.read_csv(download_artifacts(pair.child_run_id, "selection.csv"))
            np.testing.assert_array_equal(curve.selection_score.to_numpy(), own_curve.selection_score.to_numpy())
            assert curve[curve.selected].point.tolist() == [pair.selected_point]
            fingerprints.setdefault((pair.subject, pair.region), set()).add(pair.test_stimuli_fingerprint)
    assert all(len(values) == 1 for values in fingerprints.values()), "RSA and encoding share the test stimuli"


def test_effective_dimensionality_equals_numpy_on_the_projected_features(both: dict[str, str], model_file: Path,
                                                                         demo_root: Path) -> None:
    """The logged participation ratio of a point against numpy's eigenvalues of its projected features,
    recomputed from the images (every stimulus of the evaluation; the ratio does not depend on their order)."""
    dataset = open_dataset("generic", demo_root / "brain")
    ids = list(dict.fromkeys(str(stimulus) for subject in dataset.subjects() for region in dataset.regions(subject)
                             for part in ("train_ids", "test_ids")
                             for stimulus in getattr(dataset.responses(subject, region), part)))
    table = pd.read_csv(download_artifacts(both["rsa"], "effective_dimensionality.csv")).set_index("point")
    for point in ("conv2_post", "fc2_post"):
        exact = _direct_features(model_file, dataset, ids, point).numpy()
        projected = projection_for(exact.shape[1], 256, 0).project(exact).double().numpy()
        eigenvalues = np.clip(np.linalg.eigvalsh(np.cov(projected, rowvar=False)), 0, None)
        expected = eigenvalues.sum() ** 2 / np.square(eigenvalues).sum()
        assert table.loc[point, "n_stimuli"] == len(ids)
        assert table.loc[point, "effective_dimensionality"] == pytest.approx(expected, rel=1e-4)
    encoding = pd.read_csv(download_artifacts(both["encoding"], "effective_dimensionality.csv")).set_index("point")
    pd.testing.assert_frame_equal(encoding, table)

def test_scores_equal_a_direct_computation(store: MlflowClient, both: dict[str, str], model_file: Path,
                                           demo_root: Path) -> None:
    """Train-only selection over the 14 projected points, exact test activations for RSA, the same test set
    for RSA and encoding: recomputed here from the images with the alignment functions alone."""
    dataset = open_dataset("generic", demo_root / "brain")
    responses = dataset.responses("sub-02", "ventral")
    points = extraction_points(load_file(model_file).model)
    train_ids, test_ids = list(responses.train_ids), list(responses.test_ids)
    train = {p: projection_for(x.shape[1], 256, 0).project(x).numpy()
             for p in points for x in [_direct_features(model_file, dataset, train_ids, p)]}
    test_projected = {p: projection_for(x.shape[1], 256, 0).project(x).numpy()
                      for p in points for x in [_direct_features(model_file, dataset, test_ids, p)]}
    rsa = evaluate_rsa(TrainSplit(train, responses.train),
                       TestSplit({p: _direct_features(model_file, dataset, test_ids, p).numpy() for p in points},
                                 responses.test, responses.test_repetitions),
                       n_bootstrap=100, bootstrap_fraction=0.9, n_rsa_stimuli=30, projection_dim=None, seed=0)
    encoding = evaluate_encoding(TrainSplit(train, responses.train),
                                 TestSplit(test_projected, responses.test, responses.test_repetitions),
                                 n_bootstrap=100, bootstrap_fraction=0.9, projection_dim=None, seed=0)
    for analysis, expected in (("rsa", rsa), ("encoding", encoding)):
        (child,) = [c for c in _children(store, both[analysis])
                    if c.data.tags["visreps.subject"] == "sub-02" and c.data.tags["visreps.region"] == "ventral"]
        assert child.data.tags["visreps.selected_point"] == expected.selected_layer
        assert child.data.metrics["score"] == pytest.approx(expected.score, abs=1e-5)
        assert child.data.metrics["ci_low"] == pytest.approx(expected.bootstrap.ci_low, abs=1e-5)
        ceiling = expected.noise_ceiling.ceiling if analysis == "rsa" else \
            float(np.sqrt(np.clip(responses.noise_ceiling, 0, 1)).mean())  # encoding: the dataset's own ceiling
        assert responses.noise_ceiling is not None
        assert child.data.metrics["noise_ceiling"] == pytest.approx(ceiling, abs=1e-6)
        selection = pd.read_csv(download_artifacts(child.info.run_id, "selection.csv"))
        np.testing.assert_allclose(selection.selection_score, [expected.selection_scores[p] for p in points],
                                   atol=1e-5)
        tested = pd.read_csv(download_artifacts(child.info.run_id, "test_stimuli.csv")).stimulus.astype(str)
        assert list(tested) == [str(i) for i in test_ids]


def test_rerun_reuses_and_force_replaces(store: MlflowClient, both: dict[str, str], model_file: Path,
                                         demo_root: Path, capsys) -> None:
    config = evaluate_config(model_file, demo_root, "analysis=rsa")
    capsys.readouterr()
    assert run_evaluate_stage(config) == {"rsa": both["rsa"]}
    assert f"evaluate: re-using finished run {both['rsa']}" in capsys.readouterr().out
    forced = run_evaluate_stage(config.model_copy(update={"force": True}))["rsa"]
    assert forced != both["rsa"]
    old = store.get_run(both["rsa"]).data.tags
    assert old["visreps.complete"] == "false" and old["visreps.superseded_by"] == forced
    experiment = store.get_run(forced).info.experiment_id
    complete = store.search_runs([experiment], filter_string=
                                 f"tags.`visreps.run_key` = '{old['visreps.run_key']}' and tags.`visreps.complete` = 'true'")
    assert [run.info.run_id for run in complete] == [forced]


def test_behaviour_dataset_gets_concept_rsa(store: MlflowClient, model_file: Path, demo_root: Path) -> None:
    parent_id = run_evaluate_stage(evaluate_config(model_file, demo_root, "dataset=demo_behaviour",
                                                   "n_rsa_stimuli=1000"))["rsa"]
    tidy = pd.read_parquet(download_artifacts(parent_id, "results.parquet"))
    assert set(tidy.analysis) == {"rsa"} and len(_children(store, parent_id)) == 1


@pytest.mark.parametrize("override, message", [
    ("regions=[v9]", "unknown region 'v9'"),
    ("subjects=[sub-77]", "unknown subject 'sub-77'"),
    ("points=[conv9_post]", "unknown extraction point 'conv9_post'"),
    ("dataset=demo_behaviour analysis=encoding", "encoding is not defined"),
    ("model=models:/visreps-nothing@k2-x-s1", "cannot resolve model"),
    ("model=/no/such/model.pt", "cannot resolve model"),
    ("dataset=nsd dataset_root=/no/such/nsd", "does not exist"),
    ("dataset=tvsd dataset_root=", "needs dataset_root"),
    ("dataset=tvsd", "missing file monkeyF/THINGS_normMUA.mat"),
])
def test_bad_input_is_one_line_before_extraction(store: MlflowClient, model_file: Path, demo_root: Path,
                                                 override: str, message: str, capsys) -> None:
    base = [f"model={model_file}", f"dataset_root={demo_root}", "progress=false", "device=cpu"]
    status = main(["evaluate", *base, *override.split()])
    err = capsys.readouterr().err.strip()
    assert status == 2 and message in err and len(err.splitlines()) == 1, err


def test_a_model_whose_input_size_does_not_fit_is_refused(store: MlflowClient, demo_root: Path, capsys) -> None:
    status = main(["evaluate", "model=timm:vit_tiny_patch16_224", "weights=random", "image_size=64",
                   f"dataset_root={demo_root}", "progress=false", "device=cpu"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "cannot take" in err and "64" in err and len(err.splitlines()) == 1, err
