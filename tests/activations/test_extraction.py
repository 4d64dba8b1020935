"""The activations layer: one forward pass reads every point (copies, not views), the cache projects per point
exactly as the alignment code does, averages a concept's images, re-uses a complete cache and resumes an
interrupted one without changing a number."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as transforms

from visreps.activations import ActivationReader, StimulusSet, extract_features, reduce_tokens
from visreps.activations.cache import MANIFEST
from visreps.activations.stimuli import StimulusError
from visreps.alignment.selection import projection_for
from visreps.models import ExtractionError, create_model

TRANSFORM = transforms.Compose([transforms.ToImage(), transforms.ToDtype(torch.float32, scale=True)])


def _network(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("custom_cnn_small", 4).eval()


def _images(n: int, seed: int = 0) -> dict[str, Image.Image]:
    rng = np.random.default_rng(seed)
    return {f"img{i:02d}": Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for i in range(n)}


def _stimuli(images: dict[str, Image.Image], groups: list[list[str]] | None = None) -> StimulusSet:
    groups = groups or [[name] for name in images]
    ids = tuple(f"s{i}" for i in range(len(groups)))
    return StimulusSet(ids, tuple(tuple(group) for group in groups), images.__getitem__, "fixture")


def _direct(model, images: list[Image.Image], point: str) -> torch.Tensor:
    batch = torch.stack([TRANSFORM(image) for image in images])
    with torch.no_grad(), ActivationReader(model, [point]) as reader:
        return reader(batch)[point]


def test_reader_reads_all_points_in_one_pass_as_copies() -> None:
    model = _network()
    batch = torch.randn(3, 3, 32, 32)
    with ActivationReader(model, ["conv1_pre", "conv1_post", "fc2_post", "output"]) as reader:
        out = reader(batch)
    assert (out["conv1_pre"] < 0).any() and (out["conv1_post"] >= 0).all(), "in-place ReLU leaked into *_pre"
    torch.testing.assert_close(out["conv1_post"], torch.relu(out["conv1_pre"]))
    with torch.no_grad():  # hooks stay silent when the model runs outside the reader
        torch.testing.assert_close(out["output"], model(batch))
    assert out["conv1_pre"].shape[0] == 3 and out["conv1_pre"].ndim == 2
    with pytest.raises(ExtractionError, match="unknown extraction point 'conv9'"):
        ActivationReader(model, ["conv9"])
    with pytest.raises(ExtractionError, match="closed"):
        reader(batch)


def test_reader_stops_after_the_last_point_and_reduces_tokens() -> None:
    model = _network()
    calls = []
    model.fc2.register_forward_hook(lambda *args: calls.append("fc2"))
    with ActivationReader(model, ["conv1_pre"]) as reader:
        reader(torch.randn(2, 3, 32, 32))
    assert calls == [], "the layers after the last requested point must not run"
    tokens = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(reduce_tokens(tokens, "cls"), tokens[:, 0])
    assert torch.equal(reduce_tokens(tokens, "mean"), tokens.mean(dim=1))
    assert torch.equal(reduce_tokens(tokens, "auto"), tokens[:, 0])
    assert reduce_tokens(torch.zeros(2, 3, 4, 5), "mean").shape == (2, 3)
    assert reduce_tokens(tokens, "flatten").shape == (2, 12)
    with pytest.raises(ExtractionError, match="needs a \\(batch, tokens, dim\\)"):
        reduce_tokens(torch.zeros(2, 5), "cls")


def test_reader_features_point_of_a_timm_model() -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8).eval()
    batch = torch.randn(2, 3, 32, 32)
    with ActivationReader(model, ["features", "pre_logits"], token="auto") as reader:
        out = reader(batch)
    with torch.no_grad():
        features = model.forward_features(batch)
        torch.testing.assert_close(out["features"], features[:, 0])
        torch.testing.assert_close(out["pre_logits"], model.forward_head(features, pre_logits=True))


def test_cache_projects_like_the_alignment_code_and_is_reused(tmp_path) -> None:
    model, images = _network(), _images(10)
    stimuli = _stimuli(images)
    points = ["conv1_pre", "conv3_post"]  # 4,096 values (projected to 1,024) and 576 (kept: D <= k)
    features = extract_features(model, stimuli, TRANSFORM, points, cache_root=tmp_path, weights_fingerprint="w1",
                                projection_dim=1024, projection_seed=7, batch_size=4)
    exact = _direct(model, list(images.values()), "conv1_pre")
    expected = projection_for(exact.shape[1], 1024, 7).project(exact)
    assert features.shapes == {"conv1_pre": (10, 1024), "conv3_post": (10, 576)}
    np.testing.assert_allclose(features["conv1_pre"], expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features["conv3_post"], _direct(model, list(images.values()), "conv3_post").numpy(),
                               rtol=1e-6, atol=1e-6)
    assert features.input_dims == {"conv1_pre": 4096, "conv3_post": 576} and features.ids == list(stimuli.ids)
    manifest = json.loads((features.folder / MANIFEST).read_text())
    assert manifest["complete"] and manifest["rows_done"] == 10
    modified = (features.folder / "conv1_pre.npy").stat().st_mtime_ns
    again = extract_features(_network(1), stimuli, TRANSFORM, points, cache_root=tmp_path,
                             weights_fingerprint="w1", projection_dim=1024, projection_seed=7)
    assert again.key == features.key and (again.folder / "conv1_pre.npy").stat().st_mtime_ns == modified
    other = extract_features(model, stimuli, TRANSFORM, points, cache_root=tmp_path,
                             weights_fingerprint="w1", projection_dim=1024, projection_seed=8)
    assert other.key != features.key and not np.array_equal(other["conv1_pre"], features["conv1_pre"])


def test_exact_features_and_concept_averaging(tmp_path) -> None:
    model, images = _network(), _images(9)
    names = list(images)
    groups = [names[0:2], names[2:3], names[3:7], names[7:9]]  # concepts spanning batch boundaries
    features = extract_features(model, _stimuli(images, groups), TRANSFORM, ["conv2_post"], cache_root=tmp_path,
                                weights_fingerprint="w1", projection_dim=None, batch_size=3)
    expected = np.stack([_direct(model, [images[n] for n in group], "conv2_post").double().mean(0).numpy()
                         for group in groups])
    np.testing.assert_allclose(features["conv2_post"], expected, rtol=1e-5, atol=1e-6)


def test_interrupted_extraction_resumes_to_the_same_numbers(tmp_path) -> None:
    model, images = _network(), _images(12)
    names = list(images)
    groups = [names[i:i + 2] for i in range(0, 12, 2)]
    reference = extract_features(model, _stimuli(images, groups), TRANSFORM, ["conv1_post", "fc1_post"],
                                 cache_root=tmp_path / "a", weights_fingerprint="w", projection_dim=32, batch_size=5)
    failing = dict(images)
    loads = []

    def load_then_fail(name: str) -> Image.Image:
        loads.append(name)
        if len(loads) > 7:
            raise OSError("disk went away")
        return failing[name]

    broken = StimulusSet(tuple(f"s{i}" for i in range(6)), tuple(tuple(g) for g in groups), load_then_fail, "fixture")
    with pytest.raises(StimulusError, match="could not be loaded"):
        extract_features(model, broken, TRANSFORM, ["conv1_post", "fc1_post"], cache_root=tmp_path / "b",
                         weights_fingerprint="w", projection_dim=32, batch_size=5)
    (folder,) = [path for path in (tmp_path / "b").iterdir()]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["rows_done"] == 2 and not manifest["complete"]  # 5 images -> stimuli 0, 1 finished
    resumed_loads = []
    resumed = StimulusSet(broken.ids, broken.images, lambda name: resumed_loads.append(name) or images[name],
                          "fixture")
    done = extract_features(model, resumed, TRANSFORM, ["conv1_post", "fc1_post"], cache_root=tmp_path / "b",
                            weights_fingerprint="w", projection_dim=32, batch_size=5)
    assert resumed_loads == names, "resumed at the start of the interrupted batch (image 0: rows 0-1 ended in it)"
    assert manifest["batch_size"] == 5
    for point in ("conv1_post", "fc1_post"):
        np.testing.assert_array_equal(done[point], reference[point])


def test_a_stimulus_that_fails_to_load_is_named_before_extraction() -> None:
    stimuli = StimulusSet(("a",), (("missing.png",),), lambda name: Image.open(name), "fixture")
    with pytest.raises(StimulusError, match="stimulus 'a': image 'missing.png' could not be loaded"):
        stimuli.check_loadable(TRANSFORM)
    images = _images(1)
    with pytest.raises(StimulusError, match="model takes 64x64"):
        _stimuli(images).check_loadable(TRANSFORM, expected_size=64)
