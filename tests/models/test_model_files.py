"""The registry's names and errors; model files written, read with weights_only and rebuilt by load()."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visreps.errors import VisrepsError
from visreps.models import (
    ModelError, create_model, default_image_size, list_models, load, read_weights_file, save_model_file,
)


def test_list_models_and_image_sizes() -> None:
    names = list_models()
    for name in ("custom_cnn", "custom_cnn_small", "timm:resnet50", "timm:convnext_tiny", "timm:vit_small_patch16_224"):
        assert name in names
    assert "timm:resnet18" in list_models(include_all_timm=True)
    assert default_image_size("custom_cnn") == 224 and default_image_size("custom_cnn_small") == 64
    assert default_image_size("timm:vit_small_patch16_224", img_size=32) == 32


@pytest.mark.parametrize("name", ["alexnet", "timm:not_a_model_xyz", "timm:"])
def test_unknown_architecture_is_a_clear_error(name: str) -> None:
    with pytest.raises(ModelError, match="unknown architecture") as caught:
        create_model(name, 10)
    assert isinstance(caught.value, VisrepsError)


@pytest.mark.parametrize("k", [1, 0, 2.5])
def test_fewer_than_two_classes_is_an_error(k) -> None:
    with pytest.raises(ModelError, match="num_classes"):
        create_model("custom_cnn_small", k)


def test_timm_models_are_built_from_scratch_with_k_outputs() -> None:
    torch.manual_seed(0)
    first = create_model("timm:resnet18", 7)
    torch.manual_seed(1)
    second = create_model("timm:resnet18", 7)
    assert first.get_classifier().out_features == 7
    assert not torch.equal(first.conv1.weight, second.conv1.weight)  # random initialisation, no weights loaded


def _metadata(k: int) -> dict:
    return {"architecture": "custom_cnn_small", "num_classes": k, "image_size": 64, "model_kwargs": {}, "seed": 3}


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("custom_cnn_small", 6).eval()
    path = save_model_file(tmp_path / "model.pt", model, _metadata(6))
    payload = read_weights_file(path)  # weights_only=True must succeed
    assert payload["format"] == "visreps-model"
    loaded = load(str(tmp_path))  # a folder holding model.pt
    assert not loaded.model.training
    assert loaded.metadata["seed"] == 3 and len(loaded.points) == 14
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(images), model(images), rtol=0, atol=0)


def test_pickled_modules_and_broken_files_are_refused(tmp_path: Path) -> None:
    model = create_model("custom_cnn_small", 3)
    whole = tmp_path / "whole.pt"
    torch.save(model, whole)  # the original code's format: a pickled module
    with pytest.raises(ModelError, match="not a visreps weights file"):
        load(whole)
    truncated = tmp_path / "truncated.pt"
    good = save_model_file(tmp_path / "good.pt", model, _metadata(3))
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ModelError, match="not a readable torch file"):
        load(truncated)
    with pytest.raises(ModelError, match="does not exist"):
        load(tmp_path / "absent.pt")
    not_ours = tmp_path / "state.pt"
    torch.save(model.state_dict(), not_ours)
    with pytest.raises(ModelError, match="not a visreps model file"):
        load(not_ours)


def test_weights_of_another_shape_are_refused(tmp_path: Path) -> None:
    model = create_model("custom_cnn_small", 3)
    path = save_model_file(tmp_path / "m.pt", model, {**_metadata(3), "num_classes": 4})
    with pytest.raises(ModelError, match="do not fit custom_cnn_small with 4 classes"):
        load(path)


def test_mlflow_uris_are_refused_with_the_tracking_loader_named() -> None:
    from visreps.models import load_file

    for uri in ("models:/visreps-custom_cnn_small@k8-pca_pixels-s1", "runs:/0123abc/model"):
        with pytest.raises(ModelError, match=r"use visreps\.tracking\.load_model"):
            load(uri)
        with pytest.raises(ModelError, match=r"local files only"):
            load_file(uri)
