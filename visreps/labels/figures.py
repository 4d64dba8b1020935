"""Figures of a labels run (matplotlib ``Figure`` objects; no pyplot state): scree, PC1×PC2 scatter, PC poles."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from visreps.data.base import DatasetError
from visreps.data.images import ImageCollection, load_rgb
from visreps.labels.coarse import binary_codes


def scree_figure(explained_variance_ratio: np.ndarray, n_label_pcs: int, max_components: int = 50) -> Figure:
    """Explained-variance ratio per PC (bars, log scale) and cumulative (line); PCs used for labels shaded."""
    ratio = np.asarray(explained_variance_ratio, dtype=np.float64)[:max_components]
    ratio = ratio[ratio > 1e-10 * ratio.max()] if ratio.size and ratio.max() > 0 else ratio  # drop the null space
    index = np.arange(1, len(ratio) + 1)
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.bar(index, ratio, color=["tab:blue" if i <= n_label_pcs else "tab:gray" for i in index])
    axes.set_yscale("log")
    axes.set_xlabel("principal component")
    axes.set_ylabel("explained variance ratio")
    twin = axes.twinx()
    twin.plot(index, np.cumsum(ratio), color="tab:red", marker=".")
    twin.set_ylim(0, 1)
    twin.set_ylabel("cumulative", color="tab:red")
    axes.set_title(f"Scree plot (blue: the {n_label_pcs} PCs that define labels)")
    return figure


def scatter_figure(projections: np.ndarray, thresholds: np.ndarray, seed: int, max_points: int = 5000) -> Figure:
    """PC1 × PC2 projections of up to ``max_points`` images (seeded subsample), coloured by their K=4 label."""
    figure = Figure(figsize=(6, 5.5), layout="constrained")
    axes = figure.add_subplot()
    if projections.shape[1] < 2:
        axes.hist(projections[:, 0], bins=60, color="tab:blue")
        axes.axvline(thresholds[0], color="k")
        axes.set_xlabel("PC1 projection")
        axes.set_title("PC1 (only one PC computed)")
        return figure
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(projections), size=min(max_points, len(projections)), replace=False))
    labels = binary_codes(projections[chosen], thresholds, 2)
    points = axes.scatter(projections[chosen, 0], projections[chosen, 1], c=labels, cmap="tab10", vmin=0, vmax=9, s=6)
    axes.axvline(thresholds[0], color="k", lw=0.8)
    axes.axhline(thresholds[1], color="k", lw=0.8)
    axes.legend(*points.legend_elements(), title="K=4 label", loc="best", fontsize=8)
    axes.set_xlabel("PC1 projection")
    axes.set_ylabel("PC2 projection")
    axes.set_title(f"PC1 × PC2, {len(chosen)} images (lines: fit medians)")
    return figure


def pole_indices(projections: np.ndarray, candidates: np.ndarray, component: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (among ``candidates``) with the ``n`` lowest and ``n`` highest projections on ``component``."""
    values = projections[candidates, component]
    order = np.argsort(values, kind="stable")
    return candidates[order[:n]], candidates[order[::-1][:n]]


def poles_figure(collection: ImageCollection, positions: np.ndarray, projections: np.ndarray, fit: np.ndarray,
                 n_components: int = 3, n_images: int = 8, thumbnail: int = 64) -> Figure:
    """For PC1..PCn, a row of the fit images at the low pole and a row at the high pole."""
    n_components = min(n_components, projections.shape[1])
    candidates = np.flatnonzero(fit)
    n_images = max(1, min(n_images, len(candidates)))
    figure = Figure(figsize=(1.1 * n_images, 1.2 * 2 * n_components), layout="constrained")
    grid = figure.subplots(2 * n_components, n_images, squeeze=False)
    for component in range(n_components):
        low, high = pole_indices(projections, candidates, component, n_images)
        for pole, rows in (("low", low), ("high", high)):
            line = 2 * component + (pole == "high")
            for column in range(n_images):
                axes = grid[line, column]
                axes.set_xticks([])
                axes.set_yticks([])
                if column < len(rows):
                    try:
                        image = load_rgb(collection.path(int(positions[rows[column]])))
                    except DatasetError:
                        continue
                    image.thumbnail((thumbnail, thumbnail))
                    axes.imshow(np.asarray(image))
            grid[line, 0].set_ylabel(f"PC{component + 1} {pole}", fontsize=8)
    figure.suptitle("Images at both poles of the first PCs (fit images)")
    return figure
