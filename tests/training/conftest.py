"""A tiny learnable class-folder tree (32×32 PNGs) and a small training configuration for the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visreps.training import TrainConfig

#: class c: a square of colour COLOURS[c] on a noisy grey background, at a random position
COLOURS = ((220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 210, 40))


def write_tiny_tree(root: Path, per_class: int = 40, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label, colour in enumerate(COLOURS):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = rng.integers(60, 180, size=(size, size, 3)).astype(np.uint8)
            side = int(rng.integers(size // 3, size // 2))
            top, left = rng.integers(0, size - side, size=2)
            image[top:top + side, left:left + side] = colour
            Image.fromarray(image).save(folder / f"img_{index:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 colour classes × 40 images, 32×32 (160 images: 128 train, 32 held out)."""
    return write_tiny_tree(tmp_path_factory.mktemp("tiny_tree"))


def tiny_config(root: Path, **changes) -> TrainConfig:
    """custom_cnn_small at 32×32, 2 epochs, batch 32, CPU, deterministic, checkpoints every epoch."""
    base = {
        "dataset": {"root": str(root)},
        "model": {"architecture": "custom_cnn_small", "image_size": 32},
        "epochs": 2, "batch_size": 32, "lr": 2e-3, "warmup_epochs": 1, "checkpoint_every": 1,
        "num_workers": 0, "device": "cpu", "deterministic": True, "progress": False,
        "experiment": "visreps-train-tests",
    }
    for key, value in changes.items():
        target = base
        parts = key.split("__")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return TrainConfig.model_validate(base)
