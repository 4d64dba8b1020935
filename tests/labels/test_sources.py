"""Feature sources: pixels, module hooks, torchvision and timm models with local or cached weights (no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visreps.labels import FeatureSource, LabelError, ModuleSource, PixelSource
from visreps.labels.pretrained import build_timm_source, build_torchvision_source, default_layer


def test_pixel_source_downsamples_and_flattens() -> None:
    source = PixelSource(size=4)
    image = Image.fromarray(np.full((16, 8, 3), 255, dtype=np.uint8))
    batch = source.transform(image).unsqueeze(0)
    features = source.features(batch)
    assert isinstance(source, FeatureSource)
    assert features.shape == (1, 48) == (1, source.feature_dim)
    np.testing.assert_allclose(features.numpy(), 1.0)
    assert PixelSource(size=4, grayscale=True).features(PixelSource(4, True).transform(image)[None]).shape == (1, 16)


def test_module_source_reads_a_layer_before_an_inplace_relu() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6), torch.nn.ReLU(inplace=True))
    source = ModuleSource(model, "1", transform=None, name="toy")
    x = torch.randn(5, 3, 2, 2)
    expected = model[1](model[0](x))
    captured = source.features(x)
    torch.testing.assert_close(captured, expected)
    assert (captured < 0).any()
    torch.testing.assert_close(ModuleSource(model, "output", None, "toy").features(x), torch.relu(expected))
    with pytest.raises(LabelError, match="no layer 'fc9'"):
        ModuleSource(model, "fc9", None, "toy")


def test_torchvision_alexnet_default_is_second_fc_after_relu() -> None:
    assert default_layer("torchvision", "alexnet") == ("classifier.5", "flatten")
    source = build_torchvision_source("alexnet", weights="random", seed=0)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    model = source.model
    with torch.inference_mode():
        expected = model.classifier[:6](torch.flatten(model.avgpool(model.features(x)), 1))
    features = source.features(x)
    assert features.shape == (2, 4096) and (features >= 0).all()
    torch.testing.assert_close(features, expected)


def test_torchvision_weights_from_file_and_cache_never_download(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(LabelError, match=r"not in the cache: expected .*torch/hub/checkpoints/mobilenet_v3_small-\w+\.pth"):
        build_torchvision_source("mobilenet_v3_small", weights="cache")
    reference = build_torchvision_source("mobilenet_v3_small", weights="random", seed=3)
    other = build_torchvision_source("mobilenet_v3_small", weights="random", seed=4)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    import torchvision

    url = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT.url
    torch.save(reference.model.state_dict(), checkpoints / Path(url).name)
    torch.save(reference.model.state_dict(), tmp_path / "weights.pth")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = reference.features(x)
    assert expected.shape == (2, 576)
    assert not torch.allclose(other.features(x), expected)
    for weights in ("cache", str(tmp_path / "weights.pth")):
        loaded = build_torchvision_source("mobilenet_v3_small", weights=weights, seed=99)
        torch.testing.assert_close(loaded.features(x), expected)
    with pytest.raises(LabelError, match="weights file .*missing.pth does not exist"):
        build_torchvision_source("mobilenet_v3_small", weights=str(tmp_path / "missing.pth"))
    torch.save({"not": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(LabelError, match="does not fit torchvision model"):
        build_torchvision_source("mobilenet_v3_small", weights=str(tmp_path / "wrong.pth"))
    with pytest.raises(LabelError, match="no classification model 'alexnot'"):
        build_torchvision_source("alexnot", weights="random")


def test_timm_vit_weights_from_file_and_hf_cache(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(LabelError, match="huggingface-cli download timm/test_vit.r160_in1k"):
        build_timm_source("test_vit", weights="cache")
    torch.manual_seed(5)
    model = timm.create_model("test_vit", pretrained=False).eval()
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    torch.save(state, tmp_path / "vit.pth")
    snapshot = tmp_path / "hf" / "models--timm--test_vit.r160_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = model.forward_features(x)
        expected = model.forward_head(tokens, pre_logits=True)
    torch.testing.assert_close(expected, tokens[:, 0])  # pre_logits of a token-pooled ViT is the CLS token
    for weights in (str(tmp_path / "vit.pth"), "cache"):
        source = build_timm_source("test_vit", weights=weights)
        assert source.layer == "pre_logits"
        torch.testing.assert_close(source.features(x), expected)
    assert default_layer("timm", "vit_large_patch14_clip_224.openai") == ("output", "auto")
    block = build_timm_source("test_vit", weights=str(tmp_path / "vit.pth"), layer="blocks.0", token="mean")
    assert block.features(x).shape == expected.shape
    with pytest.raises(LabelError, match="timm has no model"):
        build_timm_source("no_such_model_xyz", weights="random")
