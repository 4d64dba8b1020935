"""The train stage end to end against a temporary embedded store: registered, reloadable by alias, re-used,
resumed after a kill, trained on a label table from a labels run; bad input fails before training."""

from __future__ import annotations

from importlib.metadata import version as version_of
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

import visreps.stages.train as train_stage
from visreps.config import ConfigError, load_config
from visreps.data.base import DatasetError
from visreps.data.images import scan_class_folders, train_heldout_split
from visreps.labels import LabelError
from visreps.activations import ActivationReader
from visreps.tracking import load_model, stage_run
from visreps.training import TrainConfig, TrainingError

from .conftest import tiny_config


@pytest.fixture(scope="module")
def fine_run(store: MlflowClient, tiny_tree: Path) -> str:
    return train_stage.run_train_stage(tiny_config(tiny_tree))


def test_trained_model_is_registered_and_loads_by_alias(store: MlflowClient, fine_run: str) -> None:
    loaded = load_model("models:/visreps-custom_cnn_small@k4-fine-s1")
    assert loaded.metadata["run_id"] == fine_run and loaded.metadata["epoch"] == 2
    assert loaded.metadata["K"] == 4 and loaded.metadata["image_size"] == 32 and not loaded.model.training
    assert loaded.points[0] == "conv1_pre" and len(loaded.points) == 14
    untrained = load_model("models:/visreps-custom_cnn_small@k4-fine-s1-epoch0")
    assert untrained.metadata["epoch"] == 0
    images = torch.randn(2, 3, 32, 32)
    with ActivationReader(loaded.model, ["fc2_post"]) as a, ActivationReader(untrained.model, ["fc2_post"]) as b:
        assert not torch.equal(a(images)["fc2_post"], b(images)["fc2_post"])
    version = store.get_model_version_by_alias("visreps-custom_cnn_small", "k4-fine-s1")
    assert {key: version.tags[key] for key in ("K", "label_source", "seed", "epoch")} == {
        "K": "4", "label_source": "fine", "seed": "1", "epoch": "2"}
    assert version.source == f"runs:/{fine_run}/model"
    assert load_model(f"runs:/{fine_run}/model").metadata["epoch"] == 2


def test_run_holds_curves_checkpoints_and_tags(store: MlflowClient, fine_run: str) -> None:
    run = store.get_run(fine_run)
    assert run.data.tags["visreps.complete"] == "true" and run.data.tags["visreps.K"] == "4"
    assert run.data.tags["visreps.model_uri"] == "models:/visreps-custom_cnn_small@k4-fine-s1"
    steps = [metric.step for metric in store.get_metric_history(fine_run, "heldout_accuracy")]
    assert sorted(steps) == [0, 1, 2]
    assert len(store.get_metric_history(fine_run, "lr")) == 2
    names = {item.path for folder in ("", "model", "model_epoch0", "checkpoints")
             for item in store.list_artifacts(fine_run, folder or None)}
    names |= {item.path for item in store.list_artifacts(fine_run, "mlflow_model")}
    assert {"model/model.pt", "model/metadata.json", "model_epoch0/model.pt", "checkpoints/epoch_000.pt",
            "mlflow_model/MLmodel", "mlflow_model/requirements.txt",
            "checkpoints/epoch_001.pt", "checkpoints/epoch_002.pt", "training_history.csv"} <= names
    assert run.data.params["epochs"] == "2" and run.data.params["resolved.K"] == "4"


def test_final_model_is_also_an_mlflow_pytorch_model(store: MlflowClient, fine_run: str, tmp_path: Path) -> None:
    """mlflow_model/ is a pytorch-flavour model (pickle format) that reloads as the real module: same outputs,
    and forward hooks fire (a torch.export graph would not run them)."""
    import mlflow.pytorch

    from visreps.tracking.registry import load_pytorch_flavour

    uri = f"runs:/{fine_run}/mlflow_model"
    assert store.get_run(fine_run).data.tags["visreps.mlflow_model_uri"] == uri
    version = store.get_model_version_by_alias("visreps-custom_cnn_small", "k4-fine-s1")
    assert version.tags["mlflow_model"] == uri and version.source == f"runs:/{fine_run}/model"
    local = store.download_artifacts(fine_run, "mlflow_model", str(tmp_path))
    mlmodel = (Path(local) / "MLmodel").read_text()
    assert "pytorch:" in mlmodel and "architecture: custom_cnn_small" in mlmodel
    requirements = (Path(local) / "requirements.txt").read_text()
    assert f"torch=={version_of('torch')}" in requirements
    plain = mlflow.pytorch.load_model(local, map_location="cpu")  # MLflow alone, from the downloaded folder
    fetched = load_pytorch_flavour(uri)  # through the configured store
    reference = load_model("models:/visreps-custom_cnn_small@k4-fine-s1").model
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = reference(images)
        for module in (plain, fetched):
            assert type(module) is type(reference) and not module.training
            torch.testing.assert_close(module(images), expected, rtol=0, atol=0)
    with ActivationReader(fetched, ["conv1_pre", "fc2_post"]) as a, ActivationReader(reference, ["conv1_pre", "fc2_post"]) as b:
        ours, theirs = a(images), b(images)
    assert (ours["conv1_pre"] < 0).any()
    for point in ours:
        torch.testing.assert_close(ours[point], theirs[point], rtol=0, atol=0)
    from visreps.models import ModelError

    with pytest.raises(ModelError, match="no MLmodel file"):
        load_pytorch_flavour(f"runs:/{fine_run}/model")


def test_identical_config_is_reused_and_force_trains_again(store: MlflowClient, fine_run: str, tiny_tree: Path) -> None:
    assert train_stage.run_train_stage(tiny_config(tiny_tree, num_workers=3, progress=True)) == fine_run
    forced = train_stage.run_train_stage(tiny_config(tiny_tree, force=True, epochs=1))
    assert forced != fine_run


def test_killed_run_resumes_from_its_checkpoint(store: MlflowClient, tiny_tree: Path, monkeypatch) -> None:
    config = tiny_config(tiny_tree, seed=5)
    original = train_stage._RunLogger.on_checkpoint

    def killed_after_epoch_one(self, epoch, path):
        original(self, epoch, path)
        if epoch == 1:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(train_stage._RunLogger, "on_checkpoint", killed_after_epoch_one)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_stage.run_train_stage(config)
    folder = train_stage.prepare(config)[0].checkpoint_folder
    assert (folder / "epoch_001.pt").is_file()
    monkeypatch.setattr(train_stage._RunLogger, "on_checkpoint", original)
    run_id = train_stage.run_train_stage(config)
    run = store.get_run(run_id)
    assert run.data.tags["visreps.resumed_from"].endswith("epoch_001.pt")
    assert sorted(m.step for m in store.get_metric_history(run_id, "heldout_accuracy")) == [0, 1, 2]
    assert load_model("models:/visreps-custom_cnn_small@k4-fine-s5").metadata["epoch"] == 2
    assert not folder.exists()  # local copies go once logged


def test_label_table_from_a_labels_run(store: MlflowClient, tiny_tree: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    _, heldout = train_heldout_split(len(collection))
    split = ["heldout" if i in set(heldout) else "train" for i in range(len(collection))]
    table = pd.DataFrame({"image": collection.keys, "label": collection.fine_labels // 2, "split": split})
    with stage_run("labels", TrainConfig(), experiment="visreps-labels-fake") as run:
        run.log_table(table, "label_tables/k2.parquet")
    uri = f"runs:/{run.run_id}/label_tables/k2.parquet"
    run_id = train_stage.run_train_stage(tiny_config(tiny_tree, epochs=1, labels__table=uri,
                                                     labels__source_name="pca_test"))
    loaded = load_model("models:/visreps-custom_cnn_small@k2-pca_test-s1")
    assert loaded.metadata["K"] == 2 and loaded.metadata["run_id"] == run_id
    assert loaded.metadata["label_table"] == uri


def test_bad_input_fails_before_training(store: MlflowClient, tiny_tree: Path, tmp_path: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    unnamed = tmp_path / "k2.csv"  # a table nobody recorded a label source for
    pd.DataFrame({"image": collection.keys, "label": collection.fine_labels // 2}).to_csv(unnamed, index=False)
    with pytest.raises(TrainingError, match="labels.source_name is not set and the label table records no source"):
        train_stage.run_train_stage(tiny_config(tiny_tree, labels__table=str(unnamed)))
    with pytest.raises(LabelError, match="does not exist"):
        train_stage.run_train_stage(tiny_config(tiny_tree, labels__table="/x/k8.parquet", labels__source_name="x"))
    with pytest.raises(TrainingError, match="cannot fetch labels.table"):
        train_stage.run_train_stage(tiny_config(tiny_tree, labels__table="runs:/0123abc/label_tables/k8.parquet",
                                                labels__source_name="x"))
    with pytest.raises(DatasetError, match="dataset.root is not set"):
        train_stage.run_train_stage(tiny_config(tiny_tree, dataset__root=""))
    with pytest.raises(ConfigError, match="unknown architecture 'resnet'"):
        load_config(TrainConfig, "train", overrides=["model.architecture=resnet"])
    from visreps.models import ModelError

    with pytest.raises(ModelError, match="no alias 'k99-none-s1'"):
        load_model("models:/visreps-custom_cnn_small@k99-none-s1")
