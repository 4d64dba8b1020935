"""resolve_model: every model spec (registry alias and version, run artifact, file, folder, timm:, torchvision:)
gives the same network, transform and tags; bad specs fail with one error naming them, before heavy work."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visreps.config import ConfigModel, runtime_field
from visreps.fingerprints import state_dict_fingerprint
from visreps.models import ModelError, create_model, extraction_points, save_model_file
from visreps.tracking import ResolvedModel, resolve_model, stage_run
from visreps.tracking.registry import ensure_registered, log_model_file, model_alias, registered_model_name
from visreps.data.images import resize_and_crop
from visreps.training.transforms import normalise

ARCHITECTURE = "custom_cnn_small"
METADATA = {"architecture": ARCHITECTURE, "num_classes": 4, "K": 4, "image_size": 32, "label_source": "pca_resolve",
            "seed": 3, "epoch": 2, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


class ResolveTestConfig(ConfigModel):
    seed: int = 3
    experiment: str = runtime_field("visreps-resolve-tests")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    """A fresh VISREPS_HOME (embedded SQLite store) for this module."""
    patch = pytest.MonkeyPatch()
    patch.setenv("VISREPS_HOME", str(tmp_path_factory.mktemp("resolve_home")))
    yield
    patch.undo()


@pytest.fixture(scope="module")
def registered(home, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny custom_cnn_small saved as a model file, logged to a run and registered with an alias."""
    torch.manual_seed(11)
    model = create_model(ARCHITECTURE, 4).eval()
    folder = tmp_path_factory.mktemp("resolve_model")
    file = save_model_file(folder / "model.pt", model, METADATA)
    name, alias = registered_model_name(ARCHITECTURE), model_alias(4, "pca_resolve", 3)
    with stage_run("train", ResolveTestConfig()) as run:
        log_model_file(run, file)
    version = ensure_registered(run.run_id, "model", name, alias, {"K": 4, "label_source": "pca_resolve"})
    return {"model": model, "file": file, "folder": folder, "run_id": run.run_id, "name": name, "alias": alias,
            "version": int(version.version)}


def _image(width: int = 48, height: int = 40) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_a_trained_model_resolves_alike_from_every_spec(registered: dict) -> None:
    expected_print = state_dict_fingerprint(registered["model"].state_dict())
    name, run_id = registered["name"], registered["run_id"]
    by_registry = [f"models:/{name}@{registered['alias']}", f"models:/{name}/{registered['version']}",
                   f"runs:/{run_id}/model"]
    by_path = [str(registered["file"]), str(registered["folder"])]
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected_logits = registered["model"](images)
    for spec in by_registry + by_path:
        resolved = resolve_model(spec)
        assert isinstance(resolved, ResolvedModel) and resolved.spec == spec
        assert resolved.weights_fingerprint == expected_print and not resolved.model.training
        assert resolved.image_size == 32 and resolved.points == extraction_points(resolved.model)
        assert resolved.points[0] == "conv1_pre" and len(resolved.points) == 14
        with torch.no_grad():
            torch.testing.assert_close(resolved.model(images), expected_logits, rtol=0, atol=0)
        tags = resolved.tags()
        assert tags["visreps.model"] == spec and tags["visreps.weights_fingerprint"] == expected_print
        assert {key: tags[f"visreps.{key}"] for key in ("K", "label_source", "seed", "architecture", "epoch")} == {
            "K": "4", "label_source": "pca_resolve", "seed": "3", "architecture": ARCHITECTURE, "epoch": "2"}
        if spec in by_registry:
            assert tags["visreps.model_run_id"] == run_id and tags["visreps.registered_model"] == name
            assert tags["visreps.model_version"] == str(registered["version"])
        else:
            assert not {"visreps.model_run_id", "visreps.registered_model", "visreps.model_version"} & set(tags)


def test_a_trained_model_transform_is_training_eval_geometry_with_its_mean_and_std(registered: dict) -> None:
    resolved = resolve_model(str(registered["file"]))
    image = _image()
    out = resolved.transform(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    crop = torch.from_numpy(np.asarray(resize_and_crop(image, 32)).copy()).permute(2, 0, 1).float() / 255.0
    mean, std = torch.tensor(METADATA["mean"]).view(3, 1, 1), torch.tensor(METADATA["std"]).view(3, 1, 1)
    torch.testing.assert_close(out, (crop - mean) / std, rtol=0, atol=1e-6)
    assert not torch.allclose(out, normalise(crop[None])[0])  # its own mean/std, not ImageNet's
    smaller = resolve_model(str(registered["file"]), image_size=16)
    assert smaller.image_size == 16 and smaller.transform(image).shape == (3, 16, 16)


@pytest.mark.parametrize("spec,points", [("torchvision:alexnet", {"features", "classifier"}),
                                         ("timm:resnet18", {"layer4", "pre_logits", "logits"})])
def test_random_pretrained_architectures_are_seeded(spec: str, points: set[str]) -> None:
    first = resolve_model(spec, weights="random", seed=0, image_size=64)
    again = resolve_model(spec, weights="random", seed=0, image_size=64)
    other = resolve_model(spec, weights="random", seed=1, image_size=64)
    assert first.weights_fingerprint == again.weights_fingerprint != other.weights_fingerprint
    assert first.weights_fingerprint == state_dict_fingerprint(first.model.state_dict())
    assert not first.model.training and points <= set(first.points)
    assert first.image_size == 64 and first.transform(_image()).shape == (3, 64, 64)
    tags = first.tags()
    assert tags["visreps.architecture"] == spec and tags["visreps.label_source"] == "random"
    assert tags["visreps.seed"] == "0" and tags["visreps.model"] == spec
    assert not {"visreps.model_run_id", "visreps.K", "visreps.epoch"} & set(tags)


def _fails(spec: str, match: str, **options) -> None:
    with pytest.raises(ModelError, match=re.escape(repr(spec)) + ".*" + match):
        resolve_model(spec, **options)


def test_bad_specs_fail_with_one_clear_error(registered: dict, tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    _fails("hf:facebook/dinov2-small", r"unknown scheme 'hf:'.*accepted specs: models:/<name>@<alias>")
    _fails(str(tmp_path / "absent.pt"), r"no such file or folder .*absent\.pt.*accepted specs")
    (tmp_path / "empty").mkdir()
    _fails(str(tmp_path / "empty"), r"holds no model\.pt")
    _fails(f"models:/{registered['name']}@k99-nothing-s0", r"has no alias 'k99-nothing-s0'; aliases: "
                                                          + re.escape(registered["alias"]))
    _fails("models:/visreps-no-such-model@k2-x-s0", r"no registered model 'visreps-no-such-model'")
    _fails(f"runs:/{registered['run_id']}", r"runs:/<run_id>/model")
    _fails("timm:no_such_net_xyz", r"timm has no model 'no_such_net_xyz'", weights="random")
    _fails("torchvision:alexnot", r"no classification model 'alexnot'", weights="random")
    _fails("timm:", r"no model name after 'timm:'")
    _fails("torchvision:alexnet", r"not in the cache: expected .*torch/hub/checkpoints/alexnet-[\w-]+\.pth")
    _fails("timm:resnet18", r"not in any cache.*huggingface-cli download timm/resnet18")
    _fails(str(registered["file"]), r"weights='random' applies to timm:<name> and torchvision:<name>",
           weights="random")
