"""Extraction points: hooks copy what they capture (docs/method.md §10.1), timm defaults, overrides, bad names."""

from __future__ import annotations

import pytest
import torch

from visreps.errors import VisrepsError
from visreps.activations import ActivationReader
from visreps.models import ExtractionError, create_model, extraction_points


def test_pre_differs_from_post_and_post_is_rectified() -> None:
    torch.manual_seed(0)
    model = create_model("custom_cnn_small", 4).eval()
    with ActivationReader(model, extraction_points(model)) as extractor:
        features = extractor(torch.randn(4, 3, 64, 64))
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2"):
        pre, post = features[f"{layer}_pre"], features[f"{layer}_post"]
        assert not torch.equal(pre, post), layer
        assert (pre < 0).any(), layer
        assert (post >= 0).all(), layer


def test_hooks_copy_outputs_that_an_inplace_relu_overwrites() -> None:
    """The BN output is overwritten in place by the following ReLU(inplace=True): the copy must keep negatives."""
    torch.manual_seed(0)
    model = create_model("custom_cnn_small", 4).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.conv1.bn(model.conv1.conv(images)).flatten(1)
    assert model.conv1.relu.inplace
    with ActivationReader(model, ["conv1.bn", "conv1_post"]) as extractor:
        features = extractor(images)
    torch.testing.assert_close(features["conv1.bn"], expected)
    assert (features["conv1.bn"] < 0).any()
    torch.testing.assert_close(features["conv1_post"], expected.clamp(min=0))


def test_logits_point_equals_model_output_and_hooks_are_removed() -> None:
    model = create_model("timm:resnet18", 5).eval()
    images = torch.randn(2, 3, 64, 64)
    extractor = ActivationReader(model, ["layer4", "pre_logits", "logits"])
    features = extractor(images)
    with torch.no_grad():
        torch.testing.assert_close(features["logits"], model(images))
    assert features["pre_logits"].shape == (2, 512)
    assert features["layer4"].shape == (2, 512 * 2 * 2)
    extractor.close()
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in model.modules())


def test_timm_default_points_per_family() -> None:
    assert extraction_points(create_model("timm:resnet18", 3)) == [
        "act1", "layer1", "layer2", "layer3", "layer4", "pre_logits", "logits"]
    assert extraction_points(create_model("timm:convnext_atto", 3))[:4] == [
        "stages.0", "stages.1", "stages.2", "stages.3"]
    vit = create_model("timm:vit_tiny_patch16_224", 3, img_size=32).eval()
    points = extraction_points(vit)
    assert points[:12] == [f"blocks.{i}" for i in range(12)] and points[-2:] == ["pre_logits", "logits"]
    with ActivationReader(vit, ["blocks.3", "pre_logits"]) as extractor:
        features = extractor(torch.randn(2, 3, 32, 32))
    assert features["blocks.3"].shape == (2, (4 + 1) * 192)  # 2x2 patches + class token, width 192
    assert features["pre_logits"].shape == (2, 192)


def test_any_submodule_name_is_a_point_and_unknown_names_fail() -> None:
    model = create_model("timm:resnet18", 3).eval()
    with ActivationReader(model, ["layer3.0.conv1"]) as extractor:
        assert extractor(torch.randn(1, 3, 64, 64))["layer3.0.conv1"].shape == (1, 256 * 4 * 4)
    with pytest.raises(ExtractionError, match="unknown extraction point 'layer9'") as caught:
        ActivationReader(model, ["layer9"])
    assert isinstance(caught.value, VisrepsError)
    assert "layer1" in str(caught.value)
