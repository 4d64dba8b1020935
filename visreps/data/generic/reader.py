"""The generic visreps dataset format (docs/dataset_format.md): reader and validation.

A dataset folder holds ``visreps_dataset.yaml`` (the manifest), ``stimuli.csv`` (stimulus ids and image
paths), the images, and either one ``.npz`` of responses per subject and region (kind ``neural``) or one
``behaviour.npz`` with a concept embedding and its selection/evaluation split (kind ``behaviour``).
``GenericDataset`` checks everything it can on open (without loading the response matrices) and raises
one DatasetError naming the file and the fix. The file-level checks live in
``visreps.data.generic.format``, the writers in ``visreps.data.generic.writer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from visreps.data.base import Dataset, DatasetError, Responses
from visreps.data.generic.format import (
    BEHAVIOUR_ARRAYS, INFO_PREFIX, check_numeric, check_response_arrays, check_text, drop_nonfinite_units,
    duplicates, fail, load_npz, npz_members, read_manifest, read_stimulus_table,
)
from visreps.data.images import check_image_files, load_rgb


class GenericDataset(Dataset):
    """A dataset in the generic visreps format under ``root`` (see docs/dataset_format.md).

    Options: ``check_images`` (default True) checks on open that every image file exists and is whole (its
    header and, for JPEG/PNG, its end marker; nothing is decoded). Responses are read on first use and kept;
    images are read on each ``load_image`` call.
    """

    name = "generic"

    OPTIONS = ("check_images",)

    def __init__(self, root: str | Path, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise DatasetError(f"generic dataset: unknown options {', '.join(unknown)}; "
                               f"offered: {', '.join(self.OPTIONS)}")
        check_images = bool(options.get("check_images", True))
        self.root = Path(root).expanduser()
        self.manifest = read_manifest(self.root)
        self.name = self.manifest["name"]
        self.kind = self.manifest["kind"]
        self.test_only = bool(self.manifest["test_only"])
        self.description = str(self.manifest["description"])
        behaviour = self.kind == "behaviour"
        self._table = read_stimulus_table(self.root / self.manifest["stimuli"], need_concept=behaviour)
        self._images = dict(zip(self._table["stimulus_id"], self._table["image"]))
        if check_images:
            self._check_image_files()
        self._cache: dict[tuple[str, str], Responses] = {}
        if behaviour:
            self._open_behaviour()
        else:
            self._units = {
                (subject, region): self._check_responses_file(subject, region)
                for subject, regions in self.manifest["regions"].items() for region in regions
            }

    # -- checks on open

    def _check_image_files(self) -> None:
        missing = [path for path in self._images.values() if not (self.root / path).is_file()]
        if missing:
            raise fail(f"{len(missing)} image files listed in {self.root / self.manifest['stimuli']} do not exist "
                       f"under {self.root} (first: {', '.join(missing[:3])}); fix the image column")
        check_image_files([self.root / path for path in self._images.values()],
                          f"{self.name}: the images of {self.root / self.manifest['stimuli']}")

    def responses_path(self, subject: str, region: str) -> Path:
        return self.root / self.manifest["responses"].format(subject=subject, region=region)

    def _check_responses_file(self, subject: str, region: str) -> int:
        path = self.responses_path(subject, region)
        where = f"{path} ({subject}, {region})"
        members = npz_members(path)
        for name in ("train_ids", "test_ids"):
            if name in members:
                check_text(name, *members[name], where)
        ids = load_npz(path, [n for n in ("train_ids", "test_ids") if n in members])
        return check_response_arrays(members, ids.get("train_ids", np.array([], str)),
                                     ids.get("test_ids", np.array([], str)), set(self._images), where,
                                     self.test_only)

    def _open_behaviour(self) -> None:
        path = self.root / self.manifest["behaviour"]
        members = npz_members(path)
        missing = [name for name in BEHAVIOUR_ARRAYS if name not in members]
        if missing:
            raise fail(f"{path} lacks the arrays {', '.join(missing)}")
        for name in ("concepts", "selection_concepts", "evaluation_concepts"):
            check_text(name, *members[name], str(path))
        check_numeric("embedding", members["embedding"][1], str(path))
        data = load_npz(path, BEHAVIOUR_ARRAYS)
        concepts = data["concepts"].tolist()
        if len(set(concepts)) != len(concepts):
            raise fail(f"{path}: concepts listed twice: {duplicates(concepts)}")
        shape = data["embedding"].shape
        if len(shape) != 2 or shape[0] != len(concepts) or shape[1] == 0:
            raise fail(f"{path}: embedding must be (concepts, dims) = ({len(concepts)}, n_dims), got shape {shape}")
        selection, evaluation = data["selection_concepts"].tolist(), data["evaluation_concepts"].tolist()
        if sorted(selection + evaluation) != sorted(concepts) or set(selection) & set(evaluation):
            raise fail(f"{path}: selection_concepts and evaluation_concepts must split the concepts: "
                       "every concept in exactly one of them")
        if not selection or not evaluation:
            raise fail(f"{path}: selection_concepts and evaluation_concepts must both be non-empty")
        images = self._table.groupby("concept", sort=False)["stimulus_id"].agg(list).to_dict()
        without = [c for c in concepts if c not in images]
        stray = [c for c in images if c not in set(concepts)]
        if without or stray:
            raise fail(f"{self.root / self.manifest['stimuli']}: concept column does not match {path}: "
                       f"concepts without images {without[:5]}, image concepts not in the embedding {stray[:5]}")
        self._concepts = concepts
        self._concept_images: dict[str, list[str]] = images
        self._behaviour = data

    # -- the Dataset interface

    def subjects(self) -> list[str]:
        return list(self.manifest["subjects"])

    def regions(self, subject: str | None = None) -> list[str]:
        if subject is None:
            names: list[str] = []
            for regions in self.manifest["regions"].values():
                names.extend(r for r in regions if r not in names)
            return names
        if subject not in self.manifest["regions"]:
            raise DatasetError(f"{self.name}: unknown subject {subject!r}; this dataset offers "
                               f"{', '.join(self.subjects())}")
        return list(self.manifest["regions"][subject])

    def stimulus_ids(self) -> list[str]:
        if self.kind == "behaviour":
            return list(self._concepts)
        return self._table["stimulus_id"].tolist()

    def stimulus_images(self, stimulus_id: str) -> list[str]:
        if self.kind == "behaviour":
            if stimulus_id not in self._concept_images:
                raise DatasetError(f"{self.name}: unknown concept {stimulus_id!r}")
            return list(self._concept_images[stimulus_id])
        if stimulus_id not in self._images:
            raise DatasetError(f"{self.name}: unknown stimulus {stimulus_id!r}")
        return [stimulus_id]

    def image_path(self, image_id: str) -> Path:
        """The file of one image (a stimulus_id of stimuli.csv)."""
        if image_id not in self._images:
            raise DatasetError(f"{self.name}: unknown image id {image_id!r}; ids are the stimulus_id column "
                               f"of {self.root / self.manifest['stimuli']}")
        return self.root / self._images[image_id]

    def load_image(self, image_id: str) -> Image.Image:
        return load_rgb(self.image_path(image_id))

    def stimulus_table(self) -> pd.DataFrame:
        """A copy of stimuli.csv (metadata columns included)."""
        return self._table.copy()

    def responses(self, subject: str, region: str) -> Responses:
        self.check_subject_region(subject, region)
        key = (subject, region)
        if key not in self._cache:
            behaviour = self.kind == "behaviour"
            self._cache[key] = self._read_behaviour() if behaviour else self._read_neural(subject, region)
        return self._cache[key]

    def _read_neural(self, subject: str, region: str) -> Responses:
        path = self.responses_path(subject, region)
        where = f"{path} ({subject}, {region})"
        members = npz_members(path)
        arrays = load_npz(path, list(members))
        for name in ("train", "test", "noise_ceiling", "train_repetitions", "test_repetitions"):
            if name in arrays:
                arrays[name] = arrays[name].astype(np.float32 if name != "noise_ceiling" else np.float64)
        n_units = arrays["test"].shape[1]
        dropped = drop_nonfinite_units(arrays, where)
        info: dict[str, Any] = {"source": str(path), "n_units_original": int(n_units), "dropped_units": dropped}
        info.update({name[len(INFO_PREFIX):]: arrays[name] for name in arrays if name.startswith(INFO_PREFIX)})
        return Responses(
            subject=subject, region=region,
            train_ids=arrays["train_ids"].astype(str), test_ids=arrays["test_ids"].astype(str),
            train=arrays["train"], test=arrays["test"],
            train_repetitions=arrays.get("train_repetitions"), test_repetitions=arrays.get("test_repetitions"),
            noise_ceiling=arrays.get("noise_ceiling"), info=info,
        )

    def _read_behaviour(self) -> Responses:
        data = self._behaviour
        row = {concept: i for i, concept in enumerate(self._concepts)}
        embedding = data["embedding"].astype(np.float32)
        selection = data["selection_concepts"].astype(str)
        evaluation = data["evaluation_concepts"].astype(str)
        arrays = {"train": embedding[[row[c] for c in selection]], "test": embedding[[row[c] for c in evaluation]]}
        path = self.root / self.manifest["behaviour"]
        dropped = drop_nonfinite_units(arrays, f"{path} (embedding dimensions)")
        return Responses(
            subject=self.subjects()[0], region=self.regions()[0],
            train_ids=selection, test_ids=evaluation, train=arrays["train"], test=arrays["test"],
            info={"source": str(path), "n_units_original": int(embedding.shape[1]), "dropped_units": dropped,
                  "selection_fraction": self.manifest.get("selection_fraction"),
                  "split_seed": self.manifest.get("split_seed")},
        )
