"""The pixel cache: every training image decoded once into one uint8 file, read back by training at disk speed.

An entry is ``cache_dir("decoded_images")/<collection fingerprint>-<S>px-v<version>/`` holding
``pixels.u8`` (raw uint8, shape (N, 3, S, S), C order, row i = image i of the collection in key order),
``blocks_done.npy`` (which blocks of ``block_images`` rows are written) and ``meta.json``, written last, which
marks the entry complete. Row i is exactly ``decode_image(path_i, S)`` (PIL: RGB, shorter edge to
round(S·256/224), bilinear, centre crop S), so training from the cache gives the same pixels — and the same
networks — as decoding the files. An ImageNet train tree (1,281,167 images) at S = 224 takes 193 GB.

``build_pixel_cache`` decodes in DataLoader worker processes and writes block by block; an interrupted build
resumes at the first block not written, one builder at a time per entry (a lock file). The entry's name carries
the collection fingerprint (every file's path, size and modification time), so a changed tree never reads
another tree's pixels. ``CachedImages`` is the Dataset that training's loader reads it through.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from visreps.data.base import DatasetError
from visreps.data.images import ImageCollection
from visreps.labels.tables import collection_fingerprint
from visreps.paths import cache_dir
from visreps.training.transforms import decode_image

#: bump when the stored layout or the decoding changes, so old entries are not read
PIXEL_CACHE_VERSION = 1
PIXELS_FILE, DONE_FILE, META_FILE, LOCK_FILE = "pixels.u8", "blocks_done.npy", "meta.json", ".lock"
DECODER = "PIL RGB; shorter edge to round(S*256/224), bilinear; centre crop S (visreps.training.transforms.decode_image)"


def pixel_cache_folder(collection: ImageCollection, image_size: int, root: str | Path | None = None) -> Path:
    """The entry of ``collection`` at ``image_size`` px (under ``root``, default ``cache_dir("decoded_images")``)."""
    base = Path(root) if root is not None else cache_dir("decoded_images")
    return base / f"{collection_fingerprint(collection)}-{int(image_size)}px-v{PIXEL_CACHE_VERSION}"


def read_complete_meta(folder: Path) -> dict[str, Any] | None:
    """``meta.json`` of a complete entry (its pixel file of the stated size present), else None."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
        size = (folder / PIXELS_FILE).stat().st_size
    except (OSError, json.JSONDecodeError):
        return None
    expected = meta.get("n_images", -1) * 3 * meta.get("image_size", 0) ** 2
    return meta if meta.get("version") == PIXEL_CACHE_VERSION and size == expected else None


class _DecodeForCache(Dataset):
    """Item i: (uint8 (3, S, S), "") or, for a file that cannot be decoded, (zeros, the error message)."""

    def __init__(self, paths: list[Path], image_size: int) -> None:
        self.paths, self.image_size = [str(path) for path in paths], int(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        try:
            return decode_image(self.paths[index], self.image_size), ""
        except DatasetError as error:
            return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), str(error)


def _save_atomically(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file handle: np.save would add ".npy" to the temporary name
        np.save(handle, array)


def _claim(folder: Path):
    handle = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DatasetError(f"pixel cache {folder} is being built by another process; wait for it to finish") from None
    return handle


def _pixel_file(folder: Path, n_bytes: int) -> Path:
    """The (sparse) pixel file of ``n_bytes``, created when absent; DatasetError when the disk cannot hold it."""
    path = folder / PIXELS_FILE
    existing = path.stat().st_size if path.exists() else 0
    if existing != n_bytes:
        free = shutil.disk_usage(folder).free
        if free + existing < n_bytes:
            raise DatasetError(f"pixel cache needs {n_bytes / 1e9:.1f} GB in {folder} but {free / 1e9:.1f} GB are free; "
                               "set VISREPS_HOME to a larger disk or free space")
        with open(path, "wb") as handle:
            handle.truncate(n_bytes)
    return path


def build_pixel_cache(collection: ImageCollection, image_size: int, *, num_workers: int = 4, block_images: int = 1024,
                      progress: bool = True, root: str | Path | None = None) -> Path:
    """Decode every image of ``collection`` at ``image_size`` into its entry (resuming a partial one); its folder.

    Files that cannot be decoded are collected over the whole pass; then a DatasetError names them and the entry
    is removed (fixing a file changes the tree's fingerprint, so the next build starts a new entry anyway).
    """
    folder = pixel_cache_folder(collection, image_size, root)
    if read_complete_meta(folder) is not None:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    lock = _claim(folder)
    try:
        n, side = len(collection), int(image_size)
        pixels = np.memmap(_pixel_file(folder, n * 3 * side * side), dtype=np.uint8, mode="r+", shape=(n, 3, side, side))
        n_blocks = -(-n // block_images)
        try:
            done = np.load(folder / DONE_FILE)
            if done.shape != (n_blocks,):
                done = np.zeros(n_blocks, dtype=bool)
        except (OSError, ValueError):
            done = np.zeros(n_blocks, dtype=bool)
        todo = np.flatnonzero(~done)
        rows = np.concatenate([np.arange(b * block_images, min((b + 1) * block_images, n)) for b in todo] or [[]])
        decoder = _DecodeForCache([collection.path(i) for i in range(n)], side)
        loader = DataLoader(Subset(decoder, rows.astype(np.int64).tolist()), batch_size=block_images,
                            num_workers=num_workers, shuffle=False)
        started, failed = time.perf_counter(), []
        with tqdm(total=n, initial=n - len(rows), desc="pixel cache", unit="img", disable=None if progress else True) as bar:
            for block, (images, errors) in zip(todo, loader):
                failed.extend(message for message in errors if message)
                bar.update(len(images))
                if failed:
                    continue
                start = block * block_images
                pixels[start:start + len(images)] = images.numpy()
                pixels.flush()
                done[block] = True
                _save_atomically(folder / DONE_FILE, lambda path: _write_npy(path, done))
        if failed:
            del pixels
            shutil.rmtree(folder, ignore_errors=True)
            raise DatasetError(f"pixel cache not built: {len(failed)} of {n} images cannot be decoded; the first: "
                               f"{failed[0]}")
        meta = {"version": PIXEL_CACHE_VERSION, "n_images": n, "image_size": side, "dtype": "uint8",
                "shape": [n, 3, side, side], "root": str(collection.root),
                "collection_fingerprint": collection_fingerprint(collection), "decoder": DECODER,
                "block_images": block_images, "seconds_last_build": round(time.perf_counter() - started, 3)}
        _save_atomically(folder / META_FILE, lambda path: path.write_text(json.dumps(meta, indent=1)))
        del pixels
    finally:
        lock.close()
    return folder


def _already_batched(batch):
    return batch


class CachedImages(Dataset):
    """Item i: (uint8 tensor (3, S, S) of row i of a complete entry, label i); ``__getitems__`` reads a whole
    batch in one sorted gather (pass ``collate_fn`` to the DataLoader). The file is opened in each loader process."""

    collate_fn = staticmethod(_already_batched)

    def __init__(self, folder: str | Path, labels: np.ndarray) -> None:
        self.folder = Path(folder)
        meta = read_complete_meta(self.folder)
        if meta is None:
            raise DatasetError(f"pixel cache {self.folder} is not complete; build it with `visreps image_cache`")
        self.shape = tuple(meta["shape"])
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != self.shape[0]:
            raise DatasetError(f"pixel cache {self.folder} holds {self.shape[0]} images, the labels {len(self.labels)}")
        self._pixels: np.memmap | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self) -> np.memmap:
        if self._pixels is None:
            self._pixels = np.memmap(self.folder / PIXELS_FILE, dtype=np.uint8, mode="r", shape=self.shape)
        return self._pixels

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pixels": None}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self._rows()[index])), int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = np.asarray(indices, dtype=np.int64)
        order = np.argsort(wanted, kind="stable")
        images = np.empty((len(wanted), *self.shape[1:]), dtype=np.uint8)
        images[order] = self._rows()[wanted[order]]
        return torch.from_numpy(images), torch.from_numpy(self.labels[wanted])

    def all_images(self) -> torch.Tensor:
        """Every row read into memory: uint8 (N, 3, S, S)."""
        return torch.from_numpy(np.fromfile(self.folder / PIXELS_FILE, dtype=np.uint8).reshape(self.shape))
