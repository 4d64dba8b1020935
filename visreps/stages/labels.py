"""Derive nested coarse labels (K = 2, 4, ..., 1024) from PCA median splits of a source's image features.

Sources: ``pixels`` (downsampled images), ``timm`` / ``torchvision`` models (weights from a local file or an
existing cache; never downloaded), or ``model``: a network trained with visreps (checkpoint path,
``runs:/<run_id>/<path>`` or ``models:/<name>@<alias>``). PCA and medians use the training split only
(``pca.fit_split``); every image gets a label. One MLflow run holds the label tables per K, the PCA, class
sizes, a nesting check and figures; an identical finished run is reused unless ``force=true``.

Examples:
  visreps labels dataset.root=/data/imagenet/train source.kind=torchvision source.name=alexnet
  visreps labels --config configs/labels/demo_pixels.yaml dataset.root=<demo_root>/train_images
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from visreps.data.images import train_heldout_split
from visreps.data.listing import class_folder_root, list_class_folders
from visreps.labels import (
    LabelError,
    PixelSource,
    bits_for_k,
    collection_fingerprint,
    derive_coarse_labels,
    resolve_n_pcs,
    subset_collection,
)
from visreps.labels.config import DatasetSection, LabelsConfig, SourceSection
from visreps.labels.derive import probe_feature_dim
from visreps.labels.outputs import write_label_outputs
from visreps.labels.pca import check_n_components
from visreps.labels.pretrained import build_timm_source, build_torchvision_source
from visreps.labels.sources import FeatureSource, ModuleSource, source_fingerprint
from visreps.paths import cache_dir, ensure_writable_dir
from visreps.stages.common import add_config_arguments, compute_device, stage_config
from visreps.tracking import reusable_run, stage_run

STAGE = "labels"
STAGE_VERSION = 1


CONFIG_CLASS = LabelsConfig


def trained_model_source(uri: str, layer: str = "") -> ModuleSource:
    """A network trained by visreps (``visreps.tracking.load_model``: a file, runs:/ or models:/) at one point
    (default ``fc2_post``, else ``pre_logits``, else the last point before the logits)."""
    from visreps.models import extraction_points
    from visreps.models.transforms import metadata_transform
    from visreps.tracking import load_model

    loaded = load_model(uri)
    points = extraction_points(loaded.model)
    preferred = [p for p in ("fc2_post", "pre_logits") if p in points] or [p for p in points if p != "logits"]
    chosen = layer or (preferred[0] if preferred else points[-1])
    meta = loaded.metadata
    info = {"kind": "model", "uri": str(uri), "points": points,
            **{k: meta[k] for k in ("architecture", "num_classes", "image_size", "label_source", "K", "seed",
                                    "epoch", "run_id") if k in meta}}
    return ModuleSource(loaded.model, chosen, metadata_transform(meta), f"model:{uri}", "flatten", info)


def build_source(section: SourceSection, seed: int) -> FeatureSource:
    """The FeatureSource a config names (errors about names, weights and layers come from here, early)."""
    if section.kind == "pixels":
        return PixelSource(section.pixel_size, section.grayscale)
    options = {"model_kwargs": section.model_kwargs, "image_size": section.image_size}
    if section.kind == "torchvision":
        return build_torchvision_source(section.name, section.weights, section.layer, section.token, seed, **options)
    if section.kind == "timm":
        return build_timm_source(section.name, section.weights, section.layer, section.token, seed, **options)
    return trained_model_source(section.name, section.layer)


def load_images(section: DatasetSection, seed: int):
    """(collection, held-out mask): the split is drawn on the full tree, then the max_images subset is kept."""
    root = class_folder_root(section.root, "dataset.root")
    collection = list_class_folders(root, listing=section.listing)
    _, heldout_index = train_heldout_split(len(collection), section.heldout_fraction, section.split_seed)
    heldout = np.zeros(len(collection), dtype=bool)
    heldout[heldout_index] = True
    if section.max_images and section.max_images < len(collection):
        keep = np.sort(np.random.default_rng(seed).choice(len(collection), section.max_images, replace=False))
        collection, heldout = subset_collection(collection, keep), heldout[keep]
    return collection, heldout


def _metrics(summary: dict[str, Any], ks: list[int]) -> dict[str, float]:
    metrics = {key: float(summary[key]) for key in (
        "n_images", "n_fit", "n_train", "n_heldout", "n_skipped", "feature_dim", "n_pcs",
        "explained_variance_label_pcs", "seconds_fit", "seconds_project", "seconds_total", "images_per_second")}
    metrics["nested"] = float(summary["nested"])
    for k in ks:
        for key in ("min_class_size", "max_class_size", "empty_classes"):
            metrics[f"k{k}_{key}"] = float(summary[f"k{k}"][key])
    return metrics


def run_labels_stage(config: LabelsConfig, parent_run_id: str | None = None) -> str:
    """Run (or reuse) the labels stage for ``config``; return the MLflow run id that holds the labels."""
    n_pcs = resolve_n_pcs(config.ks, config.pca.n_pcs)
    collection, heldout = load_images(config.dataset, config.seed)
    fingerprint = collection_fingerprint(collection)
    source = build_source(config.source, config.seed)
    source_print = source_fingerprint(source)
    inputs = {"dataset.root": fingerprint, "source": source_print}
    previous = reusable_run(STAGE, config, STAGE_VERSION, inputs, config.force)
    if previous is not None:
        return previous.run_id
    device = compute_device(config.compute.device, "compute.device")
    described = source.describe()
    tags = {
        "visreps.source": source.name, "visreps.label_source": config.label_source,
        "visreps.layer": described.get("layer", ""), "visreps.dataset": Path(config.dataset.root).name,
        "visreps.data_fingerprint": fingerprint,
        "visreps.n_pcs": n_pcs, "visreps.seed": config.seed, "visreps.ks": ",".join(map(str, config.ks)),
    }
    cache_root = ensure_writable_dir(config.compute.cache_dir, "compute.cache_dir") if config.compute.cache_dir \
        else (cache_dir("labels") if config.pca.cache_features else None)
    fit_count = int(len(collection) - heldout.sum()) if config.pca.fit_split == "train" else len(collection)
    source.to(device)
    check_n_components(n_pcs, probe_feature_dim(collection, source, config.dataset.on_corrupt_image, device), fit_count)
    run_name = f"labels-{source.name}-k{max(config.ks)}"
    with stage_run(STAGE, config, STAGE_VERSION, tags=tags, run_name=run_name, parent_run_id=parent_run_id,
                   inputs=inputs) as run:
        with tempfile.TemporaryDirectory(prefix="visreps-labels-", dir=cache_root) as scratch:
            result = derive_coarse_labels(
                collection, source, heldout, config.ks, n_pcs=n_pcs, fit_split=config.pca.fit_split,
                batch_size=config.compute.batch_size, num_workers=config.compute.num_workers, device=device,
                on_corrupt=config.dataset.on_corrupt_image,
                cache_file=Path(scratch) / "features.f16" if config.pca.cache_features else None,
                progress=config.compute.progress,
            )
            out = Path(scratch) / "artifacts"
            summary = write_label_outputs(result, out, seed=config.seed, figures=config.figures, csv=config.csv,
                                          n_pole_images=config.n_pole_images, label_source=config.label_source)
            run.log_artifacts(out)
        run.log_dict(described, "source.json")
        run.log_params({
            "resolved.source": source.name, "resolved.layer": described.get("layer", ""), "resolved.n_pcs": n_pcs,
            "resolved.feature_dim": result.feature_dim, "resolved.device": str(device),
            "resolved.dataset_fingerprint": fingerprint, "resolved.n_images_scanned": len(collection),
        })
        ratios = result.pca.explained_variance_ratio[:n_pcs]
        run.log_metrics({**_metrics(summary, config.ks),
                         **{f"explained_variance_ratio_pc{j + 1}": float(r) for j, r in enumerate(ratios)}})
        if result.skipped:
            print(f"labels: left out {len(result.skipped)} unreadable image(s); see skipped_images.json")
        if not summary["nested"]:
            raise LabelError(f"label sets do not nest: {result.nesting}")
        print(f"labels: run {run.run_id}: {summary['n_images']} images, K={config.ks}, "
              f"{bits_for_k(max(config.ks))} PCs explain {summary['explained_variance_label_pcs']:.3f} of the variance")
        return run.run_id


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    run_labels_stage(stage_config(LabelsConfig, STAGE, args))
    return 0
