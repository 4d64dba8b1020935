"""The eval preprocessing of networks trained by visreps: PIL image in, normalised float tensor (3, S, S) out.

Shorter edge resized to round(S·256/224), centre crop S×S (``visreps.data.images.resize_and_crop``, as in
training), scaled to 0..1 and normalised with the mean/std of the model's metadata (ImageNet by default).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image

from visreps.data.images import resize_and_crop, resize_size
from visreps.models.registry import IMAGENET_MEAN, IMAGENET_STD


class ResizeCrop:
    """Training's eval geometry as a picklable transform: PIL image -> PIL image ``size`` × ``size``."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: Image.Image) -> Image.Image:
        return resize_and_crop(image, self.size)

    def __repr__(self) -> str:
        return f"ResizeCrop(size={self.size}, resize={resize_size(self.size)})"


def eval_transform(image_size: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
    """Compose(ResizeCrop, ToImage, ToDtype(float32, scale), Normalize): PIL -> float32 (3, S, S)."""
    from torchvision.transforms import v2 as transforms

    return transforms.Compose([
        ResizeCrop(image_size), transforms.ToImage(), transforms.ToDtype(torch.float32, scale=True),
        transforms.Normalize(list(mean or IMAGENET_MEAN), list(std or IMAGENET_STD)),
    ])


def metadata_transform(metadata: dict[str, Any], image_size: int | None = None):
    """``eval_transform`` at ``image_size`` (default the metadata's) with the metadata's mean/std."""
    return eval_transform(int(image_size or metadata["image_size"]), metadata.get("mean"), metadata.get("std"))
