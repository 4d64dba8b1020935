"""Writers of the generic visreps dataset format (docs/dataset_format.md), for converting your own data.

Typical use::

    write_stimulus_table(root, {"stimulus_id": ids, "image": [f"images/{i}.png" for i in ids]})
    write_neural_responses(root, "sub-01", "V1", train_ids=..., test_ids=..., train=..., test=...)
    write_manifest(root, name="my-data", kind="neural", subjects=["sub-01"], regions=["V1"])
    GenericDataset(root)  # validates everything

or the one-call ``write_neural_dataset`` / ``write_behaviour_dataset``, which validate by opening the
result. Arrays are stored with a fixed zip timestamp, so identical inputs give identical bytes.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from visreps.data.base import DatasetError, concept_split
from visreps.data.generic.reader import GenericDataset
from visreps.data.generic.format import (
    DEFAULT_RESPONSES, FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, OPTIONAL_RESPONSE_ARRAYS,
    check_response_arrays,
)

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` readable by ``np.load`` (no pickles, fixed timestamps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            array = np.asanyarray(array)
            if array.dtype.kind == "O":
                raise DatasetError(f"{path}: array {name} holds Python objects; pass text as np.asarray(x, dtype=str)")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, array, allow_pickle=False)
    return path


def text_array(values: Sequence[Any]) -> np.ndarray:
    """Ids as a fixed-width text array (what the format stores)."""
    return np.asarray([str(value) for value in values], dtype=str)


def write_manifest(
    root: str | Path, *, name: str, kind: str, subjects: Sequence[str],
    regions: Sequence[str] | Mapping[str, Sequence[str]], description: str = "", stimuli: str = "stimuli.csv",
    responses: str = DEFAULT_RESPONSES, behaviour: str = "behaviour.npz", selection_fraction: float | None = None,
    split_seed: int | None = None, test_only: bool = False, metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``root/visreps_dataset.yaml``. ``regions``: one list for all subjects, or subject -> list."""
    if kind not in ("neural", "behaviour"):
        raise DatasetError(f"kind must be 'neural' or 'behaviour', got {kind!r}")
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": name, "kind": kind,
        "description": description, "stimuli": stimuli, "subjects": [str(s) for s in subjects],
        "regions": {str(s): [str(r) for r in rs] for s, rs in regions.items()} if isinstance(regions, Mapping)
        else [str(r) for r in regions],
    }
    if kind == "neural":
        manifest["responses"] = responses
        if test_only:
            manifest["test_only"] = True
    else:
        manifest["behaviour"] = behaviour
        manifest["selection_fraction"] = selection_fraction
        manifest["split_seed"] = split_seed
    if metadata:
        manifest["metadata"] = dict(metadata)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST_NAME
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def write_stimulus_table(root: str | Path, table: pd.DataFrame | Mapping[str, Sequence[Any]],
                         filename: str = "stimuli.csv") -> Path:
    """Write ``stimuli.csv``: columns stimulus_id, image (path relative to root) first, then the rest."""
    frame = pd.DataFrame(table)
    missing = [column for column in ("stimulus_id", "image") if column not in frame.columns]
    if missing:
        raise DatasetError(f"stimulus table needs the columns {', '.join(missing)}")
    if frame["stimulus_id"].astype(str).duplicated().any():
        raise DatasetError("stimulus table: stimulus_id values must be unique")
    first = ["stimulus_id", "image"] + (["concept"] if "concept" in frame.columns else [])
    frame = frame[first + [c for c in frame.columns if c not in first]]
    path = Path(root) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


def write_neural_responses(
    root: str | Path, subject: str, region: str, *, train_ids: Sequence[Any], test_ids: Sequence[Any],
    train: np.ndarray, test: np.ndarray, train_repetitions: np.ndarray | None = None,
    test_repetitions: np.ndarray | None = None, noise_ceiling: np.ndarray | None = None,
    info: Mapping[str, np.ndarray] | None = None, template: str = DEFAULT_RESPONSES, test_only: bool = False,
) -> Path:
    """Check and write one subject/region's responses (float32) to ``root/<template>``.

    ``train``/``test``: (n_stimuli, n_units) repetition averages; ``*_repetitions``: (n_stimuli, r, n_units)
    with NaN where a stimulus was shown fewer than r times; ``noise_ceiling``: (n_units,) fraction of
    explainable variance; ``info``: extra arrays stored as ``info_<name>`` (e.g. voxel coordinates).
    """
    arrays: dict[str, np.ndarray] = {
        "train_ids": text_array(train_ids), "test_ids": text_array(test_ids),
        "train": np.asarray(train, dtype=np.float32), "test": np.asarray(test, dtype=np.float32),
    }
    optional = {"train_repetitions": train_repetitions, "test_repetitions": test_repetitions,
                "noise_ceiling": noise_ceiling}
    for name in OPTIONAL_RESPONSE_ARRAYS:
        if optional[name] is not None:
            arrays[name] = np.asarray(optional[name], dtype=np.float32)
    for name, value in (info or {}).items():
        arrays[f"info_{name}"] = np.asarray(value)
    path = Path(root) / template.format(subject=subject, region=region)
    members = {name: (array.shape, array.dtype) for name, array in arrays.items()}
    check_response_arrays(members, arrays["train_ids"], arrays["test_ids"], None, f"{path} ({subject}, {region})",
                          test_only)
    return save_npz(path, arrays)


def write_behaviour_embedding(root: str | Path, concepts: Sequence[str], embedding: np.ndarray,
                              selection_concepts: Sequence[str], evaluation_concepts: Sequence[str],
                              filename: str = "behaviour.npz") -> Path:
    """Write ``behaviour.npz``: concepts, embedding (concepts, dims) float32 and the concept split."""
    embedding = np.asarray(embedding, dtype=np.float32)
    if embedding.ndim != 2 or embedding.shape[0] != len(concepts):
        raise DatasetError(f"embedding must be (concepts, dims) = ({len(concepts)}, n_dims), got {embedding.shape}")
    if set(map(str, selection_concepts)) & set(map(str, evaluation_concepts)):
        raise DatasetError("selection_concepts and evaluation_concepts overlap; a concept belongs to one of them")
    return save_npz(Path(root) / filename, {
        "concepts": text_array(concepts), "embedding": embedding,
        "selection_concepts": text_array(selection_concepts), "evaluation_concepts": text_array(evaluation_concepts),
    })


def write_neural_dataset(
    root: str | Path, *, name: str, stimuli: pd.DataFrame | Mapping[str, Sequence[Any]],
    responses: Mapping[tuple[str, str], Mapping[str, Any]], description: str = "", test_only: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> GenericDataset:
    """Write a whole neural dataset (images must already lie where ``stimuli['image']`` says) and open it.

    ``responses`` maps (subject, region) to the keyword arguments of ``write_neural_responses``.
    Subjects and regions keep their first-seen order.
    """
    if not responses:
        raise DatasetError("responses is empty; give at least one (subject, region)")
    write_stimulus_table(root, stimuli)
    regions: dict[str, list[str]] = {}
    for (subject, region), arrays in responses.items():
        regions.setdefault(subject, []).append(region)
        write_neural_responses(root, subject, region, test_only=test_only, **arrays)
    same = all(r == next(iter(regions.values())) for r in regions.values())
    write_manifest(root, name=name, kind="neural", subjects=list(regions), description=description,
                   regions=next(iter(regions.values())) if same else regions, test_only=test_only, metadata=metadata)
    return GenericDataset(root)


def write_behaviour_dataset(
    root: str | Path, *, name: str, stimuli: pd.DataFrame | Mapping[str, Sequence[Any]], concepts: Sequence[str],
    embedding: np.ndarray, selection_fraction: float = 0.2, split_seed: int = 42, description: str = "",
    metadata: Mapping[str, Any] | None = None,
) -> GenericDataset:
    """Write a behaviour dataset (``stimuli`` needs a concept column) with a seeded concept split; open it."""
    selection, evaluation = concept_split(sorted(str(c) for c in concepts), selection_fraction, split_seed)
    write_stimulus_table(root, stimuli)
    write_behaviour_embedding(root, concepts, embedding, selection, evaluation)
    write_manifest(root, name=name, kind="behaviour", subjects=["group"], regions=["behaviour"],
                   description=description, selection_fraction=selection_fraction, split_seed=split_seed,
                   metadata=metadata)
    return GenericDataset(root)
