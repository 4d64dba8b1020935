"""Data layer: the dataset interface, the readers of published dataset layouts, the built-in demo data."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from visreps.data.base import Dataset, DatasetError, Responses

#: dataset name -> "module:ClassName"; every class takes (root, **options)
DATASET_CLASSES: dict[str, str] = {
    "generic": "visreps.data.generic:GenericDataset",
    "nsd": "visreps.data.nsd:NSDDataset",
    "nsd_synthetic": "visreps.data.nsd_synthetic:NSDSyntheticDataset",
    "tvsd": "visreps.data.tvsd:TVSDDataset",
    "things": "visreps.data.things:ThingsBehaviourDataset",
}


def open_dataset(name: str, root: str | Path, **options: Any) -> Dataset:
    """Open dataset ``name`` (a key of DATASET_CLASSES) stored under ``root``."""
    if name not in DATASET_CLASSES:
        raise DatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASET_CLASSES))}"
        )
    module_name, class_name = DATASET_CLASSES[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(root, **options)


__all__ = ["DATASET_CLASSES", "Dataset", "DatasetError", "Responses", "open_dataset"]
