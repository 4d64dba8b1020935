"""Data layer, the lowest of visreps.

- top level: the dataset interface (``base``: ``Dataset``, ``Responses``, ``concept_split``), image reading
  (``images``), the preprocessing cache (``cache``) and ``open_dataset``;
- ``published``: readers of the published layouts (NSD, NSD-synthetic, TVSD, THINGS) and their MATLAB, NIfTI
  and preprocessing helpers;
- ``generic``: the generic dataset format (reader, format checks, writer; docs/dataset_format.md);
- ``demo``: the built-in demo dataset generator (docs/demo_data.md).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from visreps.data.base import Dataset, DatasetError, Responses

#: dataset name -> "module:ClassName"; every class takes (root, **options)
DATASET_CLASSES: dict[str, str] = {
    "generic": "visreps.data.generic.reader:GenericDataset",
    "nsd": "visreps.data.published.nsd:NSDDataset",
    "nsd_synthetic": "visreps.data.published.nsd_synthetic:NSDSyntheticDataset",
    "tvsd": "visreps.data.published.tvsd:TVSDDataset",
    "things": "visreps.data.published.things:ThingsBehaviourDataset",
}


def dataset_name(name: str, known: Iterable[str] = DATASET_CLASSES) -> str:
    """The canonical spelling (one of ``known``) of a dataset name written in any case, with hyphens, spaces or
    underscores (``NSD-synthetic`` -> ``nsd_synthetic``); DatasetError listing the known names otherwise."""
    names = {re.sub(r"[-_\s]+", "_", key.strip().lower()): key for key in known}
    canonical = names.get(re.sub(r"[-_\s]+", "_", str(name).strip().lower()))
    if canonical is None:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(names.values()))}")
    return canonical


def open_dataset(name: str, root: str | Path, **options: Any) -> Dataset:
    """Open dataset ``name`` (a key of DATASET_CLASSES, in any spelling ``dataset_name`` accepts) under ``root``."""
    name = dataset_name(name)
    module_name, class_name = DATASET_CLASSES[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(root, **options)


__all__ = ["DATASET_CLASSES", "Dataset", "DatasetError", "Responses", "dataset_name", "open_dataset"]
