"""The learning-rate schedule against torch's schedulers, decay groups, and the study's transforms vs torchvision."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from visreps.models import create_model
from visreps.training import lr_factor, parameter_groups
from visreps.data.images import resize_size
from visreps.training.transforms import augment_batch, decode_image, normalise


def test_recipe_schedule_matches_torch_sequential_lr() -> None:
    model = torch.nn.Linear(2, 2)
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-4)
    reference = torch.optim.lr_scheduler.SequentialLR(
        optimiser,
        [torch.optim.lr_scheduler.LinearLR(optimiser, start_factor=0.25, total_iters=2),
         torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=18, eta_min=0.05 * 5e-4)],
        milestones=[2],
    )
    for epoch in range(20):
        assert optimiser.param_groups[0]["lr"] == pytest.approx(5e-4 * lr_factor(epoch, 20), rel=1e-9), epoch
        optimiser.step()
        reference.step()


def test_schedule_hand_values() -> None:
    assert [lr_factor(e, 20) for e in (0, 1, 2)] == [0.25, 0.625, 1.0]
    assert lr_factor(19, 20) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 17 / 18)))
    assert lr_factor(20, 20) == pytest.approx(0.05)
    assert lr_factor(0, 1, warmup_epochs=0) == 1.0


def test_weight_decay_only_on_weight_matrices() -> None:
    model = create_model("custom_cnn_small", 4)
    decay, no_decay = parameter_groups(model, 1e-3)
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) == 8  # 5 conv + 3 linear weight matrices
    bn_params = {id(p) for m in model.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))
                 for p in m.parameters()}
    assert bn_params <= {id(p) for p in no_decay["params"]}
    vit = create_model("timm:vit_tiny_patch16_224", 3, img_size=32)
    decayed = {id(p) for p in parameter_groups(vit, 0.1)[0]["params"]}
    assert id(vit.pos_embed) not in decayed and id(vit.cls_token) not in decayed


def test_resize_sizes_scale_with_the_image() -> None:
    assert (resize_size(224), resize_size(64), resize_size(32)) == (256, 73, 37)


@pytest.mark.parametrize("shape", [(300, 200), (120, 180), (64, 64)])
def test_decode_matches_torchvision_resize_and_centre_crop(tmp_path: Path, shape) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(array).save(path)
    for size in (224, 64):
        ours = decode_image(path, size)
        reference = T.Compose([T.Resize(resize_size(size)), T.CenterCrop(size), T.PILToTensor()])(Image.open(path))
        assert ours.dtype == torch.uint8 and ours.shape == (3, size, size)
        assert torch.equal(ours, reference)


def test_flip_and_identity_are_exact() -> None:
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    flipped = augment_batch(images, generator, flip_probability=1.0, rotation_degrees=0.0)
    torch.testing.assert_close(flipped, images.float().flip(-1) / 255, rtol=0, atol=1e-6)
    kept = augment_batch(images, generator, flip_probability=0.0, rotation_degrees=0.0)
    torch.testing.assert_close(kept, images.float() / 255)


def test_rotation_matches_torchvision_rotate() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 3, 48, 48)
    generator = torch.Generator().manual_seed(3)
    draws = torch.Generator().manual_seed(3)
    torch.rand(1, generator=draws)  # the flip draw (probability 0 here)
    angle = float((torch.rand(1, generator=draws) * 2 - 1) * 10.0)
    ours = augment_batch(image, generator, flip_probability=0.0, rotation_degrees=10.0)
    reference = TF.rotate(image, angle, interpolation=TF.InterpolationMode.BILINEAR)
    assert abs(angle) > 1.0
    interior = (slice(None), slice(None), slice(8, 40), slice(8, 40))
    torch.testing.assert_close(ours[interior], reference[interior], rtol=0, atol=1e-4)


def test_augmentation_is_seeded_and_normalisation_is_imagenet() -> None:
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    first = augment_batch(images, torch.Generator().manual_seed(5))
    second = augment_batch(images, torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    white = normalise(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    torch.testing.assert_close(white[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                                 (1 - 0.406) / 0.225]))
