"""Label tables (``image,label,split``) keyed by path relative to the dataset root, and checking them.

A labels run stores one table per K at ``label_tables/k{K}.parquet`` (and ``.csv``), plus the dataset's own
folder classes at ``label_tables/fine.parquet``. Training reads a table back and calls
``validate_label_table`` against the image collection it trains on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from visreps.data.images import ImageCollection
from visreps.fingerprints import files_fingerprint, stats_fingerprint
from visreps.labels.errors import LabelError

LABEL_TABLE_COLUMNS = ("image", "label", "split")
SPLIT_NAMES = ("train", "heldout")
LABEL_SOURCE_ATTR = "label_source"


def label_table_artifact(k: int | str, suffix: str = "parquet") -> str:
    """Artifact path of the table for K (an int, or ``"fine"`` for the dataset's own classes)."""
    if suffix not in ("parquet", "csv"):
        raise LabelError(f"label table suffix must be parquet or csv, got {suffix!r}")
    name = "fine" if str(k) == "fine" else f"k{int(k)}"
    return f"label_tables/{name}.{suffix}"


def build_label_table(keys, labels, split, label_source: str = "") -> pd.DataFrame:
    """A table with columns image (str), label (int64), split ("train"/"heldout"), rows in ``keys`` order.

    ``label_source`` (when given) is kept in ``attrs["label_source"]``, which Parquet files store and read back.
    """
    keys = [str(key) for key in keys]
    labels = np.asarray(labels, dtype=np.int64)
    split = np.asarray(split, dtype=object)
    if not (len(keys) == len(labels) == len(split)):
        raise LabelError(f"label table columns differ in length: {len(keys)} images, {len(labels)} labels, {len(split)} splits")
    bad = sorted(set(split.tolist()) - set(SPLIT_NAMES))
    if bad:
        raise LabelError(f"split values {bad} are not among {SPLIT_NAMES}")
    _raise_on_duplicates(keys, "label table")
    table = pd.DataFrame({"image": keys, "label": labels, "split": split.astype(str)})
    if label_source:
        table.attrs[LABEL_SOURCE_ATTR] = label_source
    return table


def read_label_table(path: str | Path) -> pd.DataFrame:
    """Read a label table from ``.parquet`` or ``.csv``; LabelError naming the file when it is absent or malformed."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"label table {path} does not exist; check the labels run and K")
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as error:  # pyarrow/pandas raise many types; name the file instead
        raise LabelError(f"label table {path} cannot be read ({error.__class__.__name__}: {error})") from None
    missing = [column for column in ("image", "label") if column not in table.columns]
    if missing:
        raise LabelError(f"label table {path} lacks column(s) {missing}; expected columns image,label[,split]")
    return table


def _raise_on_duplicates(keys, what: str) -> None:
    series = pd.Series(list(keys), dtype=object)
    duplicated = series[series.duplicated()].unique().tolist()
    if duplicated:
        shown = ", ".join(map(str, duplicated[:5]))
        raise LabelError(f"{what} lists {len(duplicated)} image key(s) more than once (e.g. {shown}); keys must be unique")


def validate_label_table(
    table: pd.DataFrame,
    collection: ImageCollection,
    *,
    num_classes: int | None = None,
    allow_missing: bool = False,
    name: str = "label table",
) -> np.ndarray:
    """Check ``table`` against ``collection`` and return its labels in collection order ((N,) int64).

    Raises LabelError when: a column image/label is missing; an image key is repeated; a key is not an
    image of the collection; a label is not an integer in 0..num_classes−1 (or negative); or a collection
    image has no label (unless ``allow_missing``, where such images get −1, e.g. corrupt files left out).
    ``name`` starts every message (``label table <file>``).
    """
    missing_columns = [column for column in ("image", "label") if column not in table.columns]
    if missing_columns:
        raise LabelError(f"{name} lacks column(s) {missing_columns}; expected columns image,label[,split]")
    keys = table["image"].astype(str).tolist()
    _raise_on_duplicates(keys, name)
    labels = pd.to_numeric(table["label"], errors="coerce").to_numpy()
    if np.isnan(labels.astype(np.float64)).any() or not np.array_equal(labels, np.round(labels)):
        raise LabelError(f"{name}: column 'label' holds non-integer values; labels must be integers 0..K-1")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise LabelError(f"{name} holds negative label {labels.min()}; labels must be 0..K-1")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise LabelError(f"{name} holds label {labels.max()} but K={num_classes}; labels must be 0..{num_classes - 1}")
    position = collection.index_of()
    unknown = [key for key in keys if key not in position]
    if unknown:
        raise LabelError(
            f"{name} names {len(unknown)} image(s) that are not in the dataset at {collection.root} "
            f"(e.g. {', '.join(unknown[:3])}); the table was made for another dataset root or version"
        )
    aligned = np.full(len(collection), -1, dtype=np.int64)
    aligned[[position[key] for key in keys]] = labels
    if not allow_missing and (aligned < 0).any():
        absent = [collection.keys[i] for i in np.flatnonzero(aligned < 0)[:3]]
        raise LabelError(
            f"{int((aligned < 0).sum())} image(s) of the dataset at {collection.root} have no label in the table "
            f"(e.g. {', '.join(absent)}); the table was made for another dataset or a subset (dataset.max_images)"
        )
    return aligned


def subset_collection(collection: ImageCollection, indices: np.ndarray) -> ImageCollection:
    """The images at ``indices`` (sorted, unique) of ``collection``, same root and class names."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (np.any(np.diff(indices) <= 0) or indices[0] < 0 or indices[-1] >= len(collection)):
        raise LabelError("subset indices must be sorted, unique and inside the collection")
    stats = None if collection.file_stats is None else collection.file_stats[indices]
    return ImageCollection(collection.root, tuple(collection.keys[i] for i in indices), collection.fine_labels[indices],
                           collection.class_names, stats)


def collection_fingerprint(collection: ImageCollection) -> str:
    """``files_fingerprint`` of the collection's files (relative path, size, mtime): adding, removing or
    rewriting any image changes it. Uses the stats taken when the collection was listed, when it has them."""
    if collection.file_stats is None:
        return files_fingerprint(collection.root, collection.keys)
    return stats_fingerprint(collection.keys, collection.file_stats[:, 0], collection.file_stats[:, 1])
