"""Image transforms of docs/method.md §2, split into a fixed decode step and a batched, seeded augmentation step.

1. ``decode_image`` (per file, in loader workers or once for a whole in-memory dataset): resize the shorter
   edge to ``resize_size(S)`` (bilinear, antialiased), centre-crop S×S, uint8 (3, S, S). At S = 224 this is the
   the study's 256 → 224; for other sizes both scale proportionally: ``round(S · 256 / 224)`` (64 → 73 → 64,
   32 → 37 → 32). The geometry (``resize_size``, ``resize_and_crop``) lives in ``visreps.data.images``.
2. ``augment_batch`` (on the training device, per batch): random horizontal flip (p = 0.5) and random rotation
   (uniform ±10°) as one bilinear ``grid_sample`` per batch, corners filled with black as torchvision's
   RandomRotation does; draws come from an explicit ``torch.Generator`` so augmentation is seeded and
   independent of the number of loader workers.
3. ``normalise``: ImageNet mean/std. Held-out images get steps 1 and 3 only.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from visreps.data.images import load_rgb, resize_and_crop
from visreps.models.registry import IMAGENET_MEAN, IMAGENET_STD


def decode_image(path: str | Path, image_size: int) -> torch.Tensor:
    """The fixed part of the transform for one file: uint8 tensor (3, image_size, image_size)."""
    image = resize_and_crop(load_rgb(path), image_size)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or float in 0..1) images (B, 3, H, W) -> float32 ImageNet-normalised."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def augmentation_matrices(batch: int, generator: torch.Generator, flip_probability: float,
                          rotation_degrees: float) -> torch.Tensor:
    """(B, 2, 3) affine matrices (output→input sampling coordinates) of a random flip and rotation."""
    flips = torch.rand(batch, generator=generator) < flip_probability
    angles = (torch.rand(batch, generator=generator) * 2.0 - 1.0) * math.radians(rotation_degrees)
    cos, sin = torch.cos(angles), torch.sin(angles)
    sign = torch.where(flips, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    # rotation R(angle) applied after the flip diag(sign, 1): [[cos*s, -sin], [sin*s, cos]]
    theta[:, 0, 0] = cos * sign
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * sign
    theta[:, 1, 1] = cos
    return theta


def augment_batch(images: torch.Tensor, generator: torch.Generator, flip_probability: float = 0.5,
                  rotation_degrees: float = 10.0) -> torch.Tensor:
    """Random flip + rotation of a uint8/float batch (B, 3, H, W) -> float32 in 0..1 on the same device."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    if flip_probability == 0.0 and rotation_degrees == 0.0:
        return images
    theta = augmentation_matrices(images.shape[0], generator, flip_probability, rotation_degrees)
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def prepare_batch(images: torch.Tensor, train: bool, generator: torch.Generator | None = None,
                  flip_probability: float = 0.5, rotation_degrees: float = 10.0,
                  channels_last: bool = False) -> torch.Tensor:
    """Decoded uint8 batch -> network input: augmented (when ``train``) and normalised float32."""
    if train:
        if generator is None:
            raise ValueError("prepare_batch(train=True) needs a seeded torch.Generator")
        images = augment_batch(images, generator, flip_probability, rotation_degrees)
    images = normalise(images)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images
