"""Training image collections: class-folder trees (ImageNet layout) and the seeded train/held-out split.

Images are keyed by their path relative to the collection root, POSIX style (``n01440764/n01440764_10026.JPEG``).
The split is the study's: files sorted by key, a seeded random permutation, the first ``1 - heldout_fraction``
for training (fitting networks *and* PCA label thresholds), the rest held out for accuracy.
``resize_and_crop`` is the eval geometry of every visreps-trained network (shorter edge to round(S·256/224),
centre crop S×S).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from visreps.data.base import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageCollection:
    """Images under ``root``: ``keys[i]`` (relative path) with folder class ``fine_labels[i]``.

    ``class_names[c]`` is the folder name of class ``c`` (sorted), the "fine" labels of the collection.
    ``file_stats`` (N, 2) int64: size in bytes and modification time in ns of each file when it was listed
    (None when not taken); ``visreps.labels.tables.collection_fingerprint`` hashes them.
    """

    root: Path
    keys: tuple[str, ...]
    fine_labels: np.ndarray
    class_names: tuple[str, ...]
    file_stats: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def path(self, index: int) -> Path:
        return self.root / self.keys[index]

    def index_of(self) -> dict[str, int]:
        """Key -> position."""
        return {key: i for i, key in enumerate(self.keys)}


def scan_class_folders(root: str | Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> ImageCollection:
    """List ``root/<class>/<image>`` files (sorted); raise DatasetError when ``root`` is missing or empty."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist; set the dataset root to a class-folder tree")
    class_names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    keys: list[str] = []
    labels: list[int] = []
    stats: list[tuple[int, int]] = []
    for label, name in enumerate(class_names):
        for entry in os.scandir(root / name):
            if entry.name.lower().endswith(extensions) and entry.is_file():
                stat = entry.stat()
                keys.append(f"{name}/{entry.name}")
                labels.append(label)
                stats.append((stat.st_size, stat.st_mtime_ns))
    if not keys:
        raise DatasetError(
            f"image folder {root} holds no images in class sub-folders (<root>/<class>/<image>{extensions[0]}); "
            "check the path"
        )
    order = np.argsort(np.asarray(keys, dtype=object), kind="stable")
    keys_sorted = tuple(keys[i] for i in order)
    return ImageCollection(root, keys_sorted, np.asarray(labels, dtype=np.int64)[order], tuple(class_names),
                           np.asarray(stats, dtype=np.int64).reshape(-1, 2)[order])


def train_heldout_split(n_images: int, heldout_fraction: float = 0.2, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Indices (sorted) of the training and held-out images of a collection of ``n_images`` sorted keys."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    permutation = np.random.default_rng(seed).permutation(n_images)
    n_heldout = int(round(n_images * heldout_fraction))
    heldout = np.sort(permutation[:n_heldout])
    train = np.sort(permutation[n_heldout:])
    return train, heldout


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as RGB; raise DatasetError naming the file when it is missing or corrupt."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"image file {path} is corrupt or not an image ({error}); remove or replace it") from None


#: what a complete file of each format ends with (JPEG's end-of-image marker, PNG's IEND chunk), within its last KiBs
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


def image_file_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a whole image (missing, not an image, truncated), from its header and its last 4 KiB
    without decoding it; None when it looks whole."""
    try:
        with Image.open(path) as image:
            marker = _END_MARKERS.get(image.format or "")
    except FileNotFoundError:
        return "does not exist"
    except (UnidentifiedImageError, OSError) as error:
        return f"is corrupt or not an image ({error})"
    if marker is not None:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 4096))
            if marker not in handle.read():
                return "is truncated (its end marker is missing)"
    return None


def check_image_files(paths: list[Path], what: str) -> None:
    """DatasetError naming the first of ``paths`` that is not a whole image (``image_file_problem``) and the fix."""
    bad = [(path, problem) for path in paths if (problem := image_file_problem(path)) is not None]
    if bad:
        path, problem = bad[0]
        raise DatasetError(f"{what}: {len(bad)} of {len(paths)} image files are incomplete or corrupt; the first, "
                           f"{path}, {problem}: copy or download those files again (or replace them)")


def resize_size(image_size: int) -> int:
    """Shorter-edge size before the centre crop: 256 for 224, proportionally for other sizes."""
    return int(round(image_size * 256 / 224))


def resize_and_crop(image: Image.Image, image_size: int) -> Image.Image:
    """Resize the shorter edge to ``resize_size(image_size)``, then centre-crop ``image_size`` square."""
    target = resize_size(image_size)
    width, height = image.size
    if width <= height:  # the long side is truncated, as torchvision's Resize(int) does
        new_size = (target, int(target * height / width))
    else:
        new_size = (int(target * width / height), target)
    if new_size != image.size:
        image = image.resize(new_size, Image.BILINEAR)
    left = int(round((new_size[0] - image_size) / 2.0))
    top = int(round((new_size[1] - image_size) / 2.0))
    return image.crop((left, top, left + image_size, top + image_size))
