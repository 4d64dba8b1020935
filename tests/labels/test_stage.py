"""The labels stage through `visreps labels ...` against a temporary embedded tracking store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import rewrite_at_same_size
from visreps.activations import ActivationReader
from visreps.cli import main
from visreps.data.images import load_rgb, scan_class_folders, train_heldout_split
from visreps.labels import fix_signs, validate_label_table
from visreps.tracking import client, download_artifacts

FAST = ["compute.num_workers=0", "compute.progress=false", "source.pixel_size=4", "figures=false"]


@pytest.fixture(autouse=True, scope="module")
def fresh_store(tmp_path_factory: pytest.TempPathFactory):
    """One temporary embedded store for this module (creating its tables costs seconds); tests use own experiments."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VISREPS_HOME", str(tmp_path_factory.mktemp("labels_home")))
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        yield


@pytest.fixture
def experiment(request) -> str:
    return f"labels-{request.node.name}"


def labels_cli(experiment: str, *overrides: str) -> int:
    """`visreps labels OVERRIDES` with fast settings, logging into ``experiment``."""
    return main(["labels", *FAST, f"experiment={experiment}", *overrides])


def label_runs(experiment: str, status: str | None = None):
    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = mlflow_client.search_runs([found.experiment_id])
    return [run for run in runs if status is None or run.info.status == status]


@pytest.mark.slow
def test_stage_logs_tables_pca_figures_and_is_reused(image_tree: Path, experiment: str, capsys) -> None:
    args = [f"dataset.root={image_tree}", "ks=[2,4,8]", "figures=true"]
    assert labels_cli(experiment, *args) == 0
    (run,) = label_runs(experiment)
    run_id = run.info.run_id
    assert run.data.tags["visreps.complete"] == "true"
    assert run.data.tags["visreps.source"] == "pixels4"
    assert run.data.tags["visreps.layer"] == "pixels"
    assert run.data.tags["visreps.n_pcs"] == "3" and run.data.tags["visreps.seed"] == "0"
    assert run.data.tags["visreps.label_source"] == "pca_pixels"
    assert len(run.data.tags["visreps.input.dataset.root"]) == 16 and len(run.data.tags["visreps.input.source"]) == 16
    assert run.data.tags["visreps.data_fingerprint"] == run.data.tags["visreps.input.dataset.root"]
    assert run.data.params["dataset.split_seed"] == "42" and run.data.params["pca.fit_split"] == "train"
    assert run.data.metrics["nested"] == 1.0 and run.data.metrics["n_fit"] == 32.0

    folder = download_artifacts(run_id, "")
    collection = scan_class_folders(image_tree)
    _, heldout = train_heldout_split(len(collection), 0.2, 42)
    for k in (2, 4, 8):
        table = pd.read_parquet(folder / f"label_tables/k{k}.parquet")
        assert list(table.columns) == ["image", "label", "split"]
        assert table.attrs["label_source"] == "pca_pixels"  # the provenance travels with a copied table
        pd.testing.assert_frame_equal(pd.read_csv(folder / f"label_tables/k{k}.csv"), table, check_dtype=False)
        validate_label_table(table, collection, num_classes=k)
        assert sorted(table.loc[table.split == "heldout", "image"]) == sorted(collection.keys[i] for i in heldout)
    k4 = pd.read_parquet(folder / "label_tables/k4.parquet")
    k8 = pd.read_parquet(folder / "label_tables/k8.parquet")
    np.testing.assert_array_equal(k4.label.to_numpy(), k8.label.to_numpy() >> 1)
    fine = pd.read_parquet(folder / "label_tables/fine.parquet")
    np.testing.assert_array_equal(fine.label.to_numpy(), collection.fine_labels)
    assert np.load(folder / "pca/components.npy").shape == (3, 48)
    assert np.load(folder / "pca/eigenvalues.npy").shape == (48,)
    assert np.load(folder / "pca/mean.npy").shape == (48,)
    assert np.load(folder / "pca/projections.npy").shape == (40, 3)
    np.testing.assert_allclose(np.load(folder / "pca/explained_variance_ratio.npy").sum(), 1.0)
    sizes = json.loads((folder / "class_sizes.json").read_text())
    assert sum(sizes["8"]) == 40 and len(sizes["8"]) == 8 and len(sizes["fine"]) == 4
    nesting = json.loads((folder / "nesting.json").read_text())
    assert nesting == {"nested": True, "pairs": {"k2_in_k4": True, "k4_in_k8": True}}
    for figure in ("scree", "pc1_pc2_k4", "poles_pc1_pc3"):
        assert (folder / f"figures/{figure}.png").stat().st_size > 1000

    capsys.readouterr()
    # runtime settings (compute.*) do not change the run identity
    assert labels_cli(experiment, *args, "compute.batch_size=3") == 0
    assert f"re-using finished run {run_id} (same configuration and inputs" in capsys.readouterr().out
    assert len(label_runs(experiment)) == 1
    assert labels_cli(experiment, *args, "force=true") == 0
    assert len(label_runs(experiment, "FINISHED")) == 2


def test_an_image_rewritten_at_the_same_size_is_a_new_input(image_tree: Path, experiment: str, capsys) -> None:
    args = [f"dataset.root={image_tree}", "ks=[2,4]", "figures=false"]
    assert labels_cli(experiment, *args) == 0
    (first,) = label_runs(experiment)
    rewrite_at_same_size(sorted(image_tree.rglob("*.png"))[0])
    capsys.readouterr()
    assert labels_cli(experiment, *args) == 0
    out = capsys.readouterr().out
    assert f"dataset.root changed since finished run {first.info.run_id}" in out, out
    runs = label_runs(experiment, "FINISHED")
    assert len(runs) == 2 and runs[0].data.tags["visreps.run_key"] != runs[1].data.tags["visreps.run_key"]
    assert runs[0].data.tags["visreps.config_key"] == runs[1].data.tags["visreps.config_key"]


def test_stage_reports_bad_input_in_one_line(image_tree: Path, tmp_path: Path, experiment: str, monkeypatch,
                                             capsys) -> None:
    assert labels_cli(experiment, f"dataset.root={image_tree}", "ks=[2,6]") == 2
    assert "K=6 is not a power of two" in capsys.readouterr().err
    assert labels_cli(experiment) == 2
    assert "dataset.root is not set" in capsys.readouterr().err
    assert labels_cli(experiment, f"dataset.root={tmp_path / 'nowhere'}") == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert labels_cli(experiment, f"dataset.root={image_tree}", "source.kind=torchvision", "source.name=alexnet") == 2
    assert "not in the cache: expected" in capsys.readouterr().err
    assert labels_cli(experiment, f"dataset.root={image_tree}", "ks=[16]", "source.pixel_size=1") == 2
    assert "n_pcs=4 is more principal components than the 3 feature dimensions" in capsys.readouterr().err
    assert labels_cli(experiment, f"dataset.root={image_tree}", "ks=[256]", "dataset.max_images=10") == 2
    assert "n_pcs=8 needs at least 9 fit images, but there are 8" in capsys.readouterr().err
    assert label_runs(experiment) == []  # bad input is refused before a run is created


def test_corrupt_image_fails_the_run_or_is_listed(image_tree: Path, experiment: str, capsys) -> None:
    (image_tree / "class2" / "img05.png").write_bytes(b"\x89PNG broken")
    base = [f"dataset.root={image_tree}", "ks=[2,4]"]
    assert labels_cli(experiment, *base) == 2
    assert "class2/img05.png is corrupt" in capsys.readouterr().err
    (failed,) = label_runs(experiment, "FAILED")
    assert "class2/img05.png" in failed.data.tags["visreps.error"]
    assert labels_cli(experiment, *base, "dataset.on_corrupt_image=skip") == 0
    (run,) = label_runs(experiment, "FINISHED")
    skipped = json.loads((download_artifacts(run.info.run_id, "skipped_images.json")).read_text())
    assert [item["image"] for item in skipped] == ["class2/img05.png"]
    assert run.data.metrics["n_skipped"] == 1.0 and run.data.metrics["n_images"] == 39.0


def test_max_images_keeps_the_training_split(image_tree: Path, experiment: str) -> None:
    assert labels_cli(experiment, f"dataset.root={image_tree}", "ks=[2]", "dataset.max_images=20", "seed=3") == 0
    (run,) = label_runs(experiment)
    table = pd.read_parquet(download_artifacts(run.info.run_id, "label_tables/k2.parquet"))
    collection = scan_class_folders(image_tree)
    _, heldout = train_heldout_split(len(collection), 0.2, 42)
    held = {collection.keys[i] for i in heldout}
    assert len(table) == 20
    assert set(table.loc[table.split == "heldout", "image"]) == held & set(table.image)


@pytest.mark.slow
def test_labels_from_a_model_trained_by_visreps(image_tree: Path, tmp_path: Path, experiment: str) -> None:
    models = pytest.importorskip("visreps.models")
    from visreps.data.images import resize_and_crop
    from visreps.training.transforms import normalise

    torch.manual_seed(0)
    network = models.create_model("custom_cnn_small", 4).eval()
    path = models.save_model_file(tmp_path / "model.pt", network, {
        "architecture": "custom_cnn_small", "num_classes": 4, "image_size": 64,
        "mean": list(models.IMAGENET_MEAN), "std": list(models.IMAGENET_STD)})
    assert labels_cli(experiment, f"dataset.root={image_tree}", "ks=[2,4]", "source.kind=model",
                      f"source.name={path}") == 0
    (run,) = label_runs(experiment)
    assert run.data.tags["visreps.layer"] == "fc2_post" and run.data.metrics["feature_dim"] == 512.0
    table = pd.read_parquet(download_artifacts(run.info.run_id, "label_tables/k4.parquet"))

    collection = scan_class_folders(image_tree)
    images = torch.stack([torch.from_numpy(np.asarray(resize_and_crop(load_rgb(collection.path(i)), 64)).copy())
                          .permute(2, 0, 1) for i in range(len(collection))])
    with ActivationReader(network, ["fc2_post"]) as extractor:
        x = extractor(normalise(images))["fc2_post"].double().numpy()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fit = np.ones(len(x), dtype=bool)
    fit[train_heldout_split(len(x), 0.2, 42)[1]] = False
    values, vectors = np.linalg.eigh(np.cov(x[fit], rowvar=False))
    components = fix_signs(vectors[:, np.argsort(values)[::-1][:2]].T)
    projections = (x - x[fit].mean(axis=0)) @ components.T
    bits = projections > np.median(projections[fit], axis=0)
    np.testing.assert_array_equal(table.label.to_numpy(), bits[:, 0] * 2 + bits[:, 1])

    # the same network registered in the Model Registry: models:/name@alias gives the same labels; moving the
    # alias to other weights makes the identical configuration recompute instead of reusing stale labels
    from visreps.tracking import StageRun, experiment_id
    from visreps.tracking.registry import log_model_file, register_model_version

    def register(model_file: Path) -> None:
        mlflow_client = client()
        exp = experiment_id(f"{experiment}-models", mlflow_client)
        run_id = mlflow_client.create_run(exp).info.run_id
        log_model_file(StageRun(run_id, exp, mlflow_client), model_file)
        mlflow_client.set_terminated(run_id)
        register_model_version(run_id, "model", "visreps-labels-test-cnn", "k4-test-s0", {})

    register(path)
    uri = "models:/visreps-labels-test-cnn@k4-test-s0"
    assert labels_cli(experiment, f"dataset.root={image_tree}", "ks=[2,4]", "source.kind=model",
                      f"source.name={uri}") == 0
    newest = max(label_runs(experiment), key=lambda run: run.info.start_time)
    registered = pd.read_parquet(download_artifacts(newest.info.run_id, "label_tables/k4.parquet"))
    pd.testing.assert_frame_equal(registered, table)
    torch.manual_seed(1)
    register(models.save_model_file(tmp_path / "other.pt", models.create_model("custom_cnn_small", 4), {
        "architecture": "custom_cnn_small", "num_classes": 4, "image_size": 64}))
    assert labels_cli(experiment, f"dataset.root={image_tree}", "ks=[2,4]", "source.kind=model",
                      f"source.name={uri}") == 0
    assert len(label_runs(experiment, "FINISHED")) == 3
