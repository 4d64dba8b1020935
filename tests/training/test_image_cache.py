"""The pixel cache: the same pixels as decoding the files, resumable after a SIGKILL, and what training reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import stage_environment
from visreps.data.base import DatasetError
from visreps.data.images import scan_class_folders
from visreps.data.listing import list_class_folders
from visreps.errors import VisrepsError
from visreps.training import BatchStream, Trainer, training_labels
from visreps.training.data import DecodedImages, resolve_image_source
from visreps.training.image_cache import (
    DONE_FILE,
    META_FILE,
    CachedImages,
    build_pixel_cache,
    pixel_cache_folder,
    read_complete_meta,
)
from visreps.training.transforms import decode_image
from tests.training.conftest import tiny_config


def test_cache_holds_exactly_the_decoded_pixels(tiny_tree: Path, tmp_path: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    folder = build_pixel_cache(collection, 24, num_workers=0, block_images=50, progress=False, root=tmp_path)
    meta = read_complete_meta(folder)
    assert meta is not None and meta["shape"] == [160, 3, 24, 24]
    assert np.load(folder / DONE_FILE).tolist() == [True] * 4  # 160 images in blocks of 50
    cached = CachedImages(folder, collection.fine_labels)
    for index in (0, 49, 50, 159):
        image, label = cached[index]
        assert torch.equal(image, decode_image(collection.path(index), 24)) and label == collection.fine_labels[index]
    images, labels = cached.__getitems__([159, 3, 77, 3])  # any order, repeats allowed
    assert torch.equal(images[0], cached[159][0]) and torch.equal(images[1], images[3]) and labels.tolist()[1] == labels.tolist()[3]
    assert torch.equal(cached.all_images()[77], cached[77][0])
    # another size or a changed tree is another entry
    assert pixel_cache_folder(collection, 32, tmp_path) != folder
    (tiny_tree / collection.keys[5]).touch()
    assert pixel_cache_folder(scan_class_folders(tiny_tree), 24, tmp_path) != folder


def test_streams_from_cache_equal_streams_from_files(tiny_tree: Path, tmp_path: Path) -> None:
    labels = training_labels(scan_class_folders(tiny_tree))
    folder = build_pixel_cache(labels.collection, 32, num_workers=0, progress=False, root=tmp_path)
    paths = [labels.collection.path(i) for i in range(len(labels.collection))]
    cpu = torch.device("cpu")
    for shuffle in (True, False):
        from_files = BatchStream(labels.train_indices, labels.labels, 50, cpu, shuffle=shuffle, seed=3,
                                 files=DecodedImages(paths, labels.labels, 32))
        from_cache = BatchStream(labels.train_indices, labels.labels, 50, cpu, shuffle=shuffle, seed=3, num_workers=2,
                                 files=CachedImages(folder, labels.labels))
        pairs = list(zip(from_files, from_cache, strict=True))
        assert len(pairs) == 3
        for (images_a, labels_a), (images_b, labels_b) in pairs:
            assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)


def test_image_source_resolution() -> None:
    assert resolve_image_source("auto", 1_000, 224, cache_complete=True) == "memory"
    assert resolve_image_source("auto", 1_281_167, 224, cache_complete=True) == "cache"
    assert resolve_image_source("auto", 1_281_167, 224, cache_complete=False) == "files"
    assert resolve_image_source("files", 10, 32, cache_complete=True) == "files"
    with pytest.raises(VisrepsError, match="visreps image_cache"):
        resolve_image_source("cache", 10, 32, cache_complete=False)


def test_training_from_the_cache_is_the_training_from_files(tiny_tree: Path, tmp_path: Path) -> None:
    labels = training_labels(list_class_folders(tiny_tree))
    build_pixel_cache(labels.collection, 32, num_workers=0, progress=False)  # where the trainer looks
    weights = {}
    for source in ("files", "cache"):
        trainer = Trainer(tiny_config(tiny_tree, epochs=1, image_source=source), labels)
        assert trainer.image_source == source
        trainer.fit()
        weights[source] = trainer.network.state_dict()
    for name, tensor in weights["files"].items():
        assert torch.equal(tensor, weights["cache"][name]), name


def test_undecodable_files_are_all_named_and_leave_no_entry(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for label in range(2):
        (root / f"c{label}").mkdir(parents=True)
        for index in range(6):
            Image.new("RGB", (20, 20), (label * 200, index * 30, 0)).save(root / f"c{label}" / f"{index}.png")
    (root / "c0" / "2.png").write_bytes(b"not a png")
    (root / "c1" / "5.png").write_bytes(b"not a png either")
    collection = scan_class_folders(root)
    with pytest.raises(DatasetError, match=r"2 of 12 images cannot be decoded; the first: image file .*c0/2\.png"):
        build_pixel_cache(collection, 16, num_workers=0, block_images=4, progress=False, root=tmp_path / "cache")
    assert not pixel_cache_folder(collection, 16, tmp_path / "cache").exists()


def _jpeg_tree(root: Path, n_images: int) -> Path:
    rng = np.random.default_rng(0)
    for index in range(n_images):
        folder = root / f"c{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (360, 480, 3), dtype=np.uint8)).save(folder / f"{index:03d}.jpg", quality=90)
    return root


def test_build_killed_midway_resumes_to_the_same_pixels(tmp_path: Path) -> None:
    root = _jpeg_tree(tmp_path / "tree", 96)  # ~3 ms to decode each, 24 blocks of 4
    env = stage_environment(tmp_path / "home")
    command = [sys.executable, "-m", "visreps.cli", "image_cache", f"root={root}", "image_size=64", "block_images=4",
               "num_workers=0", "progress=false"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    entries = tmp_path / "home" / "cache" / "decoded_images"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        done = list(entries.glob(f"*/{DONE_FILE}")) if entries.is_dir() else []
        if done and 2 <= np.load(done[0]).sum() < 20:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    assert process.wait(timeout=60) == -signal.SIGKILL, process.stderr.read().decode()
    folder = done[0].parent
    written = int(np.load(folder / DONE_FILE).sum())
    assert not (folder / META_FILE).exists() and written < 24  # killed: not marked complete
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["n_images"] == 96 and np.load(folder / DONE_FILE).all()
    collection = scan_class_folders(root)
    cached = CachedImages(folder, collection.fine_labels)
    for index in (0, 4 * written - 1, 4 * written, 95):  # the blocks before the kill and after it
        assert torch.equal(cached[index][0], decode_image(collection.path(index), 64)), index
