"""Fixtures of the labels tests: tiny class-folder image trees written with a seeded generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image_tree(root: Path, n_classes: int = 4, per_class: int = 10, size: int = 8, seed: int = 0) -> Path:
    """``root/class{c}/img{i}.png`` random RGB images; class c has its channel c%3 darkened (so PCs find it)."""
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            pixels[..., c % 3] //= 2 + c // 3
            Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """40 images (4 classes × 10) of 8×8 pixels."""
    return write_image_tree(tmp_path / "images")
