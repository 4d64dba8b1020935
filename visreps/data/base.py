"""The one dataset interface every consumer (evaluation, dashboards, `datasets check`) reads.

A dataset offers stimuli (ids in a stable order, images loaded lazily) and, per subject and region,
the responses to those stimuli split into train and test. Behaviour datasets (THINGS) use the same
structure with one pseudo-subject and one region; their "stimuli" are concepts, each made of several
images (`stimulus_images`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

from visreps.errors import VisrepsError


class DatasetError(VisrepsError, ValueError):
    """A dataset on disk is missing, malformed or asked for something it does not offer.

    The message names the file or the name at fault and says how to fix it.
    """


def concept_split(concepts: Sequence[str], selection_fraction: float = 0.2, seed: int = 42
                  ) -> tuple[list[str], list[str]]:
    """(selection, evaluation) concepts of a behaviour dataset, each in the order given.

    A permutation ``default_rng(seed).permutation(n)`` of the positions in ``concepts``; its first
    floor(fraction · n) (at least 1, at most n − 1) are the selection concepts, the rest the evaluation ones.
    THINGS applies it to the concepts in ``unique_id.txt`` order (the study's split: 370 of 1,854 with seed 42);
    the generic writer to the sorted concept names, so that its split does not depend on the input order.
    """
    if not 0.0 < selection_fraction < 1.0:
        raise DatasetError(f"selection_fraction must be between 0 and 1 (exclusive), got {selection_fraction}")
    names = [str(concept) for concept in concepts]
    if len(names) < 2:
        raise DatasetError(f"a concept split needs at least 2 concepts, got {len(names)}")
    n_selection = min(max(1, int(np.floor(selection_fraction * len(names)))), len(names) - 1)
    permutation = np.random.default_rng(seed).permutation(len(names))
    chosen = np.zeros(len(names), dtype=bool)
    chosen[permutation[:n_selection]] = True
    return ([name for name, keep in zip(names, chosen) if keep],
            [name for name, keep in zip(names, chosen) if not keep])


@dataclass(frozen=True)
class Responses:
    """Responses of one subject in one region (or the behavioural embedding of one group).

    Shapes: ``train`` (n_train, n_units), ``test`` (n_test, n_units), float32, rows ordered as
    ``train_ids`` / ``test_ids``; repetitions, when present, are (n_stimuli, n_repetitions, n_units)
    with NaN where a stimulus was shown fewer times. ``train``/``test`` are the repetition averages.
    ``noise_ceiling`` is an optional per-unit ceiling supplied by the dataset (fraction of explainable
    variance, 0..1, e.g. from NSD's ncsnr). ``info`` records provenance (dropped units, voxel coordinates...).
    """

    subject: str
    region: str
    train_ids: np.ndarray
    test_ids: np.ndarray
    train: np.ndarray
    test: np.ndarray
    train_repetitions: np.ndarray | None = None
    test_repetitions: np.ndarray | None = None
    noise_ceiling: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_units(self) -> int:
        return int(self.train.shape[1] if self.train.size else self.test.shape[1])


class Dataset(ABC):
    """A brain or behaviour dataset read from where it lies on disk."""

    #: short name used in configs and tags ("nsd", "tvsd", "things", "generic", ...)
    name: str = "dataset"
    #: "neural" datasets have regions of units; "behaviour" datasets have one embedding
    kind: Literal["neural", "behaviour"] = "neural"
    #: test-only datasets (NSD-synthetic) have empty train splits; layers come from another dataset
    test_only: bool = False

    @abstractmethod
    def subjects(self) -> list[str]:
        """Subject names in a stable order."""

    @abstractmethod
    def regions(self, subject: str | None = None) -> list[str]:
        """Region names offered (for one subject, or for all when None)."""

    @abstractmethod
    def stimulus_ids(self) -> list[str]:
        """Every stimulus id of the dataset, in a stable order."""

    @abstractmethod
    def load_image(self, image_id: str) -> Image.Image:
        """One image as an RGB PIL image (read lazily from disk)."""

    def stimulus_images(self, stimulus_id: str) -> list[str]:
        """Image ids that make up one stimulus (itself for image datasets; a concept's images for THINGS)."""
        return [stimulus_id]

    @abstractmethod
    def responses(self, subject: str, region: str) -> Responses:
        """Responses of ``subject`` in ``region``; raises DatasetError naming an unknown subject/region."""

    def check_subject_region(self, subject: str, region: str) -> None:
        """Raise a DatasetError naming what is offered when ``subject`` or ``region`` is unknown."""
        subjects = self.subjects()
        if subject not in subjects:
            raise DatasetError(
                f"{self.name}: unknown subject {subject!r}; this dataset offers {', '.join(subjects)}"
            )
        regions = self.regions(subject)
        if region not in regions:
            raise DatasetError(
                f"{self.name}: unknown region {region!r} for subject {subject!r}; "
                f"offered: {', '.join(regions)}"
            )

    def summary(self) -> dict[str, Any]:
        """What is there: subjects, regions with unit counts, stimulus count (for `datasets check`)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "test_only": self.test_only,
            "n_stimuli": len(self.stimulus_ids()),
            "subjects": {},
        }
        for subject in self.subjects():
            out["subjects"][subject] = {}
            for region in self.regions(subject):
                r = self.responses(subject, region)
                out["subjects"][subject][region] = {
                    "n_units": r.n_units,
                    "n_train": int(len(r.train_ids)),
                    "n_test": int(len(r.test_ids)),
                    "n_repetitions": None
                    if r.test_repetitions is None
                    else int(r.test_repetitions.shape[1]),
                }
        return out
