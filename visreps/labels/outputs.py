"""Write a CoarseLabelSet as the files of a labels run (the stage logs the folder as the run's artifacts).

Layout under ``folder``::

    label_tables/k{K}.parquet, k{K}.csv   image,label,split for each K (rows sorted by image key)
    label_tables/fine.parquet, fine.csv   the dataset's folder classes (label = class index) + class_name
    pca/eigenvalues.npy                   (D,) all covariance eigenvalues, descending, float64
    pca/explained_variance_ratio.npy      (D,) float64
    pca/components.npy                    (n_pcs, D) float64, unit rows, sign rule of visreps.labels.pca
    pca/mean.npy                          (D,) float64 mean of the L2-normalised fit features
    pca/medians.npy                       (n_pcs,) thresholds (medians over the fit images)
    pca/projections.npy                   (n_images, n_pcs) float32, rows in label-table order
    class_sizes.json                      {"K": [size of class 0, ...], ..., "fine": [...]}
    nesting.json                          {"nested": bool, "pairs": {"k2_in_k4": bool, ...}}
    skipped_images.json                   [{"image": key, "error": message}, ...] (corrupt files left out)
    summary.json                          counts, feature width, timings, class-size summaries
    figures/scree.png, figures/pc1_pc2_k4.png, figures/poles_pc1_pc3.png
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from visreps.labels.coarse import class_sizes
from visreps.labels.derive import CoarseLabelSet
from visreps.labels.figures import poles_figure, scatter_figure, scree_figure
from visreps.labels.tables import build_label_table, label_table_artifact


def label_summary(result: CoarseLabelSet) -> dict[str, Any]:
    """Counts, class-size summaries per K (over all labelled images), explained variance, timings (JSON-able)."""
    summary: dict[str, Any] = {
        "n_images": int(len(result.positions)),
        "n_fit": int(result.fit.sum()),
        "n_train": int((result.split == "train").sum()),
        "n_heldout": int((result.split == "heldout").sum()),
        "n_skipped": len(result.skipped),
        "feature_dim": int(result.feature_dim),
        "n_pcs": int(result.pca.n_components),
        "explained_variance_label_pcs": float(result.pca.explained_variance_ratio[: result.pca.n_components].sum()),
        "nested": all(result.nesting.values()),
        **{key: float(value) for key, value in result.timings.items()},
    }
    for k, labels in result.labels.items():
        sizes = class_sizes(labels, k)
        summary[f"k{k}"] = {
            "min_class_size": int(sizes.min()), "max_class_size": int(sizes.max()),
            "mean_class_size": float(sizes.mean()), "empty_classes": int((sizes == 0).sum()),
            "max_over_min": float(sizes.max() / sizes.min()) if sizes.min() > 0 else None,
        }
    return summary


def write_label_outputs(result: CoarseLabelSet, folder: str | Path, *, seed: int = 0, figures: bool = True,
                        csv: bool = True, n_pole_images: int = 8, label_source: str = "") -> dict[str, Any]:
    """Write every artifact of a labels run under ``folder``; return the summary (also in summary.json).

    Parquet tables carry ``label_source`` in their metadata (``DataFrame.attrs``), so a copied table still says
    where its labels came from.
    """
    folder = Path(folder)
    for sub in ("label_tables", "pca", "figures"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    keys = result.keys
    for k, labels in result.labels.items():
        table = build_label_table(keys, labels, result.split, label_source)
        table.to_parquet(folder / label_table_artifact(k), index=False)
        if csv:
            table.to_csv(folder / label_table_artifact(k, "csv"), index=False)
    fine = build_label_table(keys, result.fine_labels, result.split, label_source)
    fine["class_name"] = [result.collection.class_names[c] for c in result.fine_labels]
    fine.to_parquet(folder / label_table_artifact("fine"), index=False)
    if csv:
        fine.to_csv(folder / label_table_artifact("fine", "csv"), index=False)

    pca = result.pca
    np.save(folder / "pca/eigenvalues.npy", pca.eigenvalues)
    np.save(folder / "pca/explained_variance_ratio.npy", pca.explained_variance_ratio)
    np.save(folder / "pca/components.npy", pca.components)
    np.save(folder / "pca/mean.npy", pca.mean)
    np.save(folder / "pca/medians.npy", result.thresholds)
    np.save(folder / "pca/projections.npy", result.projections.astype(np.float32))

    sizes = {str(k): class_sizes(labels, k).tolist() for k, labels in result.labels.items()}
    sizes["fine"] = np.bincount(result.fine_labels, minlength=len(result.collection.class_names)).tolist()
    _write_json(folder / "class_sizes.json", sizes)
    _write_json(folder / "nesting.json", {"nested": all(result.nesting.values()), "pairs": result.nesting})
    _write_json(folder / "skipped_images.json", [{"image": k, "error": m} for k, m in result.skipped.items()])
    summary = label_summary(result)
    _write_json(folder / "summary.json", summary)

    if figures:
        n_label_pcs = max(result.labels).bit_length() - 1
        scree_figure(pca.explained_variance_ratio, n_label_pcs).savefig(folder / "figures/scree.png", dpi=110)
        scatter_figure(result.projections, result.thresholds, seed).savefig(folder / "figures/pc1_pc2_k4.png", dpi=110)
        poles_figure(result.collection, result.positions, result.projections, result.fit,
                     n_images=n_pole_images).savefig(folder / "figures/poles_pc1_pc3.png", dpi=110)
    return summary


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1))
