"""Figures of the demo dataset (pure functions: files in, matplotlib Figure out, no global pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from visreps.data.base import DatasetError
from visreps.data.demo.images import COLOUR_FAMILIES, N_COLOUR_FAMILIES, N_SHAPES, SHAPE_FAMILIES, fine_class


def sample_image_grid(root: str | Path, n_per_class: int = 3, tile: int = 48) -> Figure:
    """Training images of every fine class: one row per shape (grouped by shape family), one block of
    ``n_per_class`` columns per colour family. The first images of each class in table order are shown.

    ``root``: the demo folder (holding ``train_images.csv``); ``tile``: pixels per image in the mosaic.
    """
    root = Path(root)
    table_path = root / "train_images.csv"
    if not table_path.is_file():
        raise DatasetError(f"{table_path} is missing; give the folder of a generated demo dataset")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    table = pd.read_csv(table_path, usecols=["image", "fine_label"])
    gap, family_gap = 2, 8
    width = N_COLOUR_FAMILIES * n_per_class * (tile + gap) + (N_COLOUR_FAMILIES - 1) * family_gap
    height = N_SHAPES * (tile + gap) + (len(SHAPE_FAMILIES) - 1) * family_gap
    mosaic = np.full((height, width, 3), 255, dtype=np.uint8)
    row_centres = []
    for shape in range(N_SHAPES):
        top = shape * (tile + gap) + (shape // 4) * family_gap
        row_centres.append(top + tile / 2)
        for colour in range(N_COLOUR_FAMILIES):
            label = 4 * shape + colour
            paths = table.loc[table["fine_label"] == label, "image"].head(n_per_class)
            for k, path in enumerate(paths):
                left = (colour * n_per_class + k) * (tile + gap) + colour * family_gap
                with Image.open(root / "train_images" / path) as image:
                    mosaic[top:top + tile, left:left + tile] = np.asarray(
                        image.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST))
    figure = Figure(figsize=(width / 72 + 2.0, height / 72 + 0.8), dpi=100)
    axes = figure.add_axes((0.16, 0.02, 0.82, 0.9))
    axes.imshow(mosaic, interpolation="nearest")
    axes.set_yticks(row_centres)
    axes.set_yticklabels([f"{SHAPE_FAMILIES[s // 4]} / {fine_class(4 * s).shape_name}" for s in range(N_SHAPES)],
                         fontsize=8)
    block = n_per_class * (tile + gap)
    axes.set_xticks([c * (block + family_gap) + block / 2 for c in range(N_COLOUR_FAMILIES)])
    axes.set_xticklabels(COLOUR_FAMILIES, fontsize=9)
    axes.xaxis.tick_top()
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_title("demo training images: shape family / shape (rows) x colour family (columns)", fontsize=10,
                   pad=18)
    return figure
