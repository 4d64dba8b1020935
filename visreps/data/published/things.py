"""THINGS behaviour (Hebart et al. 2019/2023): the SPoSE 66-d concept embedding and the THINGS images.

Root holds ``spose_embedding_66d_sorted.txt`` (1,854 rows × 66 columns, whitespace separated, no header),
``unique_id.txt`` (one concept id per line, same order) and ``object_images/<concept>/<concept>_NNx.jpg``
(file names configurable). Stimuli are concepts: ``stimulus_images(concept)`` lists the image ids (file stems)
whose activations are averaged downstream. One pseudo-subject ``group``, one region ``behaviour``; the concepts
are split at random (seed 42) into 20 % selection (``train``) and 80 % evaluation (``test``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visreps.data.base import Dataset, DatasetError, Responses, concept_split
from visreps.data.images import IMAGE_EXTENSIONS, check_image_files, load_rgb

SUBJECT, REGION = "group", "behaviour"


class ThingsBehaviourDataset(Dataset):
    """The THINGS odd-one-out embedding as a behaviour dataset.

    Options: ``embedding_file``, ``concepts_file``, ``images_dir`` (relative to root or absolute),
    ``selection_fraction`` (0.2), ``seed`` (42).
    """

    name = "things"
    kind = "behaviour"

    def __init__(self, root: str | Path, embedding_file: str = "spose_embedding_66d_sorted.txt",
                 concepts_file: str = "unique_id.txt", images_dir: str = "object_images",
                 selection_fraction: float = 0.2, seed: int = 42):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"things: dataset root {self.root} is not a folder")
        self.embedding_path = self.root / embedding_file
        self.concepts_path = self.root / concepts_file
        self.images_path = self.root / images_dir
        for relative, option in ((embedding_file, "embedding_file"), (concepts_file, "concepts_file")):
            if not (self.root / relative).is_file():
                raise DatasetError(f"things: missing file {Path(relative).as_posix()} (expected at "
                                   f"{self.root / relative}); set the option {option} if it lies elsewhere")
        if not self.images_path.is_dir():
            raise DatasetError(f"things: missing folder {images_dir} (expected at {self.images_path}); "
                               "set the option images_dir to the THINGS object_images folder")
        self.concepts = self._read_concepts()
        self.embedding = self._read_embedding()
        self._images = self._scan_images()
        self._image_paths = {stem: path for paths in self._images.values() for stem, path in paths}
        check_image_files(list(self._image_paths.values()), f"things: the images under {self.images_path}")
        selection, _ = concept_split(self.concepts, float(selection_fraction), int(seed))
        chosen = np.isin(np.asarray(self.concepts, dtype=object), selection)
        self.selection, self.evaluation = np.flatnonzero(chosen), np.flatnonzero(~chosen)
        self.seed, self.selection_fraction = int(seed), float(selection_fraction)

    def _read_concepts(self) -> list[str]:
        concepts = [line.strip() for line in self.concepts_path.read_text(errors="replace").splitlines() if line.strip()]
        if not concepts:
            raise DatasetError(f"things: {self.concepts_path} lists no concept")
        if len(set(concepts)) != len(concepts):
            duplicate = next(c for c in concepts if concepts.count(c) > 1)
            raise DatasetError(f"things: {self.concepts_path} lists concept {duplicate!r} twice")
        return concepts

    def _read_embedding(self) -> np.ndarray:
        try:
            embedding = np.loadtxt(self.embedding_path, dtype=np.float64, ndmin=2)
        except ValueError as error:
            raise DatasetError(f"things: {self.embedding_path} is not a whitespace-separated number table ({error})") from None
        if embedding.shape[0] != len(self.concepts):
            raise DatasetError(f"things: {self.embedding_path} has {embedding.shape[0]} rows but "
                               f"{self.concepts_path} lists {len(self.concepts)} concepts; they must match line by line")
        if not np.isfinite(embedding).all():
            row, column = (int(i) for i in np.argwhere(~np.isfinite(embedding))[0])
            raise DatasetError(f"things: {self.embedding_path} row {row + 1} ({self.concepts[row]}), column {column + 1} "
                               "is NaN or infinite; the published embedding has none: download the file again")
        return embedding.astype(np.float32)

    def _scan_images(self) -> dict[str, list[tuple[str, Path]]]:
        images: dict[str, list[tuple[str, Path]]] = {}
        missing: list[str] = []
        for concept in self.concepts:
            folder = self.images_path / concept
            if not folder.is_dir():
                missing.append(concept)
                continue
            files = sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
            if not files:
                raise DatasetError(f"things: image folder {folder} of concept {concept!r} holds no image")
            images[concept] = [(Path(name).stem, folder / name) for name in files]
        if missing:
            raise DatasetError(f"things: {len(missing)} concept(s) of {self.concepts_path.name} have no image folder under "
                               f"{self.images_path}, e.g. {missing[0]!r}; the concept ids do not match the images")
        stems = [stem for paths in images.values() for stem, _ in paths]
        if len(set(stems)) != len(stems):
            duplicate = next(s for s in stems if stems.count(s) > 1)
            raise DatasetError(f"things: image name {duplicate!r} occurs in two concept folders")
        return images

    # --- Dataset interface ----------------------------------------------------------------------------------
    def subjects(self) -> list[str]:
        return [SUBJECT]

    def regions(self, subject: str | None = None) -> list[str]:
        return [REGION]

    def stimulus_ids(self) -> list[str]:
        return list(self.concepts)

    def stimulus_images(self, stimulus_id: str) -> list[str]:
        if stimulus_id not in self._images:
            raise DatasetError(f"things: unknown concept {stimulus_id!r}")
        return [stem for stem, _ in self._images[stimulus_id]]

    def load_image(self, image_id: str) -> Image.Image:
        if image_id not in self._image_paths:
            hint = " (a concept: use stimulus_images() for its images)" if image_id in self._images else ""
            raise DatasetError(f"things: unknown image id {image_id!r}{hint}")
        return load_rgb(self._image_paths[image_id])

    def responses(self, subject: str, region: str) -> Responses:
        self.check_subject_region(subject, region)
        names = np.array(self.concepts, dtype=str)
        return Responses(
            subject=SUBJECT, region=REGION,
            train_ids=names[self.selection], test_ids=names[self.evaluation],
            train=self.embedding[self.selection], test=self.embedding[self.evaluation],
            info={
                "dataset": self.name,
                "embedding_file": str(self.embedding_path),
                "n_dimensions": int(self.embedding.shape[1]),
                "split": f"seeded permutation (seed {self.seed}); first floor({self.selection_fraction}·n) "
                         "concepts = selection (train), rest = evaluation (test)",
                "rdm": "1 - Pearson correlation between concept embeddings (computed downstream)",
                "dropped_units": [],
            },
        )

    def summary(self, deep: bool = False) -> dict[str, Any]:
        out = super().summary()
        out.update(root=str(self.root), n_images=len(self._image_paths), warnings=[])
        return out
