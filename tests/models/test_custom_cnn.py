"""CustomCNN against the docs/method.md §2 table: layer geometry, parameter count, initialisation, extraction sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from visreps.activations import ActivationReader
from visreps.models import CustomCNN, create_model, extraction_points

PUBLISHED_SIZES_224 = {
    "conv1": 96 * 55 * 55, "conv2": 256 * 27 * 27, "conv3": 384 * 13 * 13, "conv4": 384 * 13 * 13,
    "conv5": 256 * 13 * 13, "fc1": 4096, "fc2": 4096,
}


def spec_parameter_count(k: int) -> int:
    """Hand count of the table of docs/method.md §2: conv weights (+ bias except conv1), BN (2 per channel), linears, BN1d."""
    convs = [(3, 96, 11, False), (96, 256, 5, True), (256, 384, 3, True), (384, 384, 3, True), (384, 256, 3, True)]
    total = sum(cin * cout * k_ * k_ + (cout if bias else 0) + 2 * cout for cin, cout, k_, bias in convs)
    total += (2304 * 4096 + 4096) + 2 * 4096 + (4096 * 4096 + 4096) + 2 * 4096
    return total + 4096 * k + k


@pytest.fixture(scope="module")
def full_model() -> CustomCNN:
    torch.manual_seed(0)
    return create_model("custom_cnn", 1000).eval()


def test_parameter_count_matches_the_table(full_model: CustomCNN) -> None:
    count = sum(p.numel() for p in full_model.parameters())
    assert count == spec_parameter_count(1000)
    assert 33.5e6 < count < 34.5e6  # "~34 M parameters at K=1000"


def test_layer_geometry(full_model: CustomCNN) -> None:
    conv1 = full_model.conv1.conv
    assert (conv1.kernel_size, conv1.stride, conv1.padding, conv1.bias) == ((11, 11), (4, 4), (2, 2), None)
    for name, (k, s, p) in {"conv2": (5, 1, 2), "conv3": (3, 1, 1), "conv4": (3, 1, 1), "conv5": (3, 1, 1)}.items():
        conv = getattr(full_model, name).conv
        assert (conv.kernel_size[0], conv.stride[0], conv.padding[0]) == (k, s, p)
        assert conv.bias is not None
    assert [hasattr(getattr(full_model, f"conv{i}"), "pool") for i in range(1, 6)] == [True, True, False, False, True]
    assert full_model.fc1.dropout.p == full_model.fc2.dropout.p == 0.3
    assert full_model.fc1.linear.in_features == 2304 and full_model.output.in_features == 4096


def test_extraction_points_and_sizes_at_224(full_model: CustomCNN) -> None:
    points = extraction_points(full_model)
    assert points == [f"{layer}_{kind}" for layer in PUBLISHED_SIZES_224 for kind in ("pre", "post")]
    with ActivationReader(full_model, points) as extractor:
        features = extractor(torch.randn(2, 3, 224, 224))
    for layer, size in PUBLISHED_SIZES_224.items():
        assert features[f"{layer}_pre"].shape == (2, size)
        assert features[f"{layer}_post"].shape == (2, size)


def test_initialisation_follows_the_spec() -> None:
    torch.manual_seed(1)
    model = create_model("custom_cnn", 1000)
    conv3 = model.conv3.conv.weight  # fan_out = 384 * 3 * 3
    assert conv3.std().item() == pytest.approx(math.sqrt(2.0 / (384 * 9)), rel=0.03)
    fc2 = model.fc2.linear.weight  # Linear weight (out, in): fan_out = out_features = 4096
    assert fc2.std().item() == pytest.approx(math.sqrt(2.0 / 4096), rel=0.03)
    assert model.output.weight.std().item() == pytest.approx(1.0 / math.sqrt(4096), rel=0.03)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
            assert torch.all(module.bias == 0)


def test_small_variant_keeps_the_fourteen_points_at_64() -> None:
    model = create_model("custom_cnn_small", 8).eval()
    points = extraction_points(model)
    assert len(points) == 14
    with ActivationReader(model, points) as extractor:
        features = extractor(torch.randn(3, 3, 64, 64))
    assert features["conv1_pre"].shape == (3, 16 * 32 * 32)
    assert features["conv2_pre"].shape == (3, 48 * 15 * 15)
    assert features["conv5_post"].shape == (3, 48 * 7 * 7)
    assert model(torch.randn(3, 3, 64, 64)).shape == (3, 8)
    assert sum(p.numel() for p in model.parameters()) < 0.7e6
