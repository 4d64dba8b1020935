"""Stimulus sets: which images make up each stimulus, streamed as transformed batches.

A stimulus is one image (NSD, TVSD, the demo) or several whose activations are averaged (a THINGS concept,
docs/method.md §4). ``StimulusSet.batches`` yields ``(images (B, C, H, W), rows (B,))`` in stimulus order, so the images
of one stimulus are consecutive and a reader can average them as they stream past.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from visreps.errors import VisrepsError


class StimulusError(VisrepsError, RuntimeError):
    """A stimulus image could not be loaded or transformed; the message names it."""


@dataclass(frozen=True)
class StimulusSet:
    """Stimuli ``ids`` (n,), the image ids of each (``images[i]``, at least one), and how to load an image.

    ``source_fingerprint`` identifies the image files (e.g. a dataset's ``tree_fingerprint``); with the ids it
    makes ``fingerprint``, which feature caches key on.
    """

    ids: tuple[str, ...]
    images: tuple[tuple[str, ...], ...]
    load_image: Callable[[str], Image.Image]
    source_fingerprint: str

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.images):
            raise StimulusError(f"{len(self.ids)} stimulus ids but {len(self.images)} image lists")
        empty = [stimulus for stimulus, images in zip(self.ids, self.images) if not images]
        if empty:
            raise StimulusError(f"stimuli without images: {', '.join(empty[:5])}")

    @classmethod
    def from_dataset(cls, dataset: Any, ids: Sequence[str], source_fingerprint: str) -> "StimulusSet":
        """The stimuli ``ids`` of a ``visreps.data.Dataset`` (its ``stimulus_images`` and ``load_image``)."""
        ids = tuple(str(stimulus) for stimulus in ids)
        images = tuple(tuple(dataset.stimulus_images(stimulus)) for stimulus in ids)
        return cls(ids, images, dataset.load_image, source_fingerprint)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_images(self) -> int:
        return sum(len(images) for images in self.images)

    @property
    def image_counts(self) -> np.ndarray:
        """Images per stimulus, (n,) int64."""
        return np.array([len(images) for images in self.images], dtype=np.int64)

    @property
    def fingerprint(self) -> str:
        """SHA-256 (16 hex) of the source fingerprint, the stimulus ids and their images, in order."""
        text = json.dumps([self.source_fingerprint, self.ids, self.images], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def subset(self, ids: Sequence[str]) -> "StimulusSet":
        """The stimuli ``ids`` (in that order); StimulusError naming any that are not in this set."""
        position = {stimulus: index for index, stimulus in enumerate(self.ids)}
        missing = [stimulus for stimulus in ids if stimulus not in position]
        if missing:
            raise StimulusError(f"{len(missing)} stimuli are not in the set (e.g. {', '.join(map(str, missing[:5]))})")
        chosen = [position[str(stimulus)] for stimulus in ids]
        return StimulusSet(tuple(self.ids[i] for i in chosen), tuple(self.images[i] for i in chosen),
                           self.load_image, self.source_fingerprint)

    def check_loadable(self, transform: Callable, expected_size: int | None = None) -> tuple[int, ...]:
        """Load and transform the first image (before any long work); its tensor shape.

        StimulusError when it fails or, with ``expected_size``, when it is not ``expected_size`` pixels square.
        """
        tensor = _ImageItems(self, transform, 0)[0][0]
        if expected_size is not None and tuple(tensor.shape[-2:]) != (expected_size, expected_size):
            raise StimulusError(
                f"the stimulus transform gives {tuple(tensor.shape)} images but the model takes "
                f"{expected_size}x{expected_size}; check the model's image_size")
        return tuple(tensor.shape)

    def batches(self, transform: Callable, *, start_image: int = 0, batch_size: int = 64, num_workers: int = 0
                ) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        """``(images (B, C, H, W) float32, rows (B,) int64)`` over the images from ``start_image`` on (counted
        over all stimuli' images, in order); a resumed stream that starts on a multiple of ``batch_size``
        sees exactly the batches of an uninterrupted one."""
        items = _ImageItems(self, transform, start_image)
        loader = DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=_collate, persistent_workers=False)
        yield from loader


class _ImageItems(TorchDataset):
    """(transformed image, stimulus row) for every image from position ``start_image`` on."""

    def __init__(self, stimuli: StimulusSet, transform: Callable, start_image: int) -> None:
        self.stimuli = stimuli
        self.transform = transform
        self.items = [(row, image) for row in range(len(stimuli)) for image in stimuli.images[row]][start_image:]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row, image_id = self.items[index]
        try:
            image = self.stimuli.load_image(image_id)
            tensor = self.transform(image.convert("RGB"))
        except Exception as error:  # PIL, file systems and transforms raise many types; name the image
            raise StimulusError(
                f"stimulus {self.stimuli.ids[row]!r}: image {image_id!r} could not be loaded "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
        return tensor, row


def _collate(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, np.ndarray]:
    return torch.stack([tensor for tensor, _ in items]), np.array([row for _, row in items], dtype=np.int64)
