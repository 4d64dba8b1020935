"""Image cache: decode a class-folder tree once into the pixel cache that training reads at disk speed.

Examples:
  visreps image_cache root=/data/imagenet/train image_size=224 num_workers=14
  visreps train dataset.root=/data/imagenet/train ...        # image_source=auto reads the cache once it is complete

Writes ``<VISREPS_HOME>/cache/decoded_images/<fingerprint>-<S>px-v1/`` (N × 3 × S × S bytes: 193 GB for ImageNet
train at 224 px); the pixels are exactly those training decodes from the files, so trainings from the cache and
from the files are the same runs. Interrupted, it resumes at the first block not written. Tracks nothing in
MLflow. Training picks the cache by ``image_source`` (docs/training.md, "Feeding a GPU").
"""

from __future__ import annotations

import argparse
import time
from typing import Literal

from pydantic import Field

from visreps.config import ConfigModel
from visreps.data.listing import class_folder_root, list_class_folders
from visreps.stages.common import add_config_arguments, stage_config
from visreps.training.image_cache import build_pixel_cache, pixel_cache_folder, read_complete_meta

STAGE = "image_cache"


class ImageCacheConfig(ConfigModel):
    """Which tree, at which size, with how many decoding processes."""

    root: str = Field("", description="class-folder tree <root>/<class>/<image> (as training's dataset.root), or demo")
    image_size: int = Field(224, ge=16, description="side in pixels: the training input size (model.image_size)")
    num_workers: int = Field(8, ge=0, description="decoding processes")
    block_images: int = Field(1024, ge=1, description="images written (and resumable) per block")
    listing: Literal["check", "trust", "rescan"] = Field(
        "check", description="the tree's stored file listing: check (names stored, sizes and times read again), "
                             "trust (as stored) or rescan (walk again)")
    progress: bool = Field(True, description="tqdm bar (shown on a terminal only)")


CONFIG_CLASS = ImageCacheConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = stage_config(ImageCacheConfig, STAGE, args)
    collection = list_class_folders(class_folder_root(config.root, "root"), listing=config.listing)
    folder = pixel_cache_folder(collection, config.image_size)
    n_bytes = len(collection) * 3 * config.image_size**2
    if read_complete_meta(folder) is not None:
        print(f"image_cache: complete already: {len(collection):,} images at {config.image_size} px in {folder}")
        return 0
    print(f"image_cache: {len(collection):,} images of {collection.root} at {config.image_size} px "
          f"({n_bytes / 1e9:.2f} GB) into {folder}", flush=True)
    started = time.perf_counter()
    build_pixel_cache(collection, config.image_size, num_workers=config.num_workers,
                      block_images=config.block_images, progress=config.progress)
    seconds = time.perf_counter() - started
    print(f"image_cache: done in {seconds:.1f} s; train with image_source=auto (or cache) and "
          f"model.image_size={config.image_size}")
    return 0
