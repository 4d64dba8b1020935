"""Feature sources: what turns an image into one feature vector for PCA labels.

Any object with the ``FeatureSource`` shape works (the stage layer wraps visreps' own trained models the
same way). Here: ``PixelSource`` (downsampled pixels, a learned-feature-free control) and ``ModuleSource``
(any torch module read at one point through ``visreps.activations.ActivationReader``, the one place visreps
hooks into networks); ``visreps.labels.pretrained`` builds ModuleSources for timm and torchvision models, the
labels stage for networks trained by visreps.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from PIL import Image
from torchvision.transforms import v2 as transforms

from visreps.activations import ActivationReader, TokenRule
from visreps.fingerprints import state_dict_fingerprint
from visreps.labels.errors import LabelError
from visreps.models.points import ExtractionError



@runtime_checkable
class FeatureSource(Protocol):
    """Maps a batch of transformed images (B, C, H, W) to features (B, D)."""

    name: str
    transform: Callable[[Image.Image], torch.Tensor]

    def describe(self) -> dict[str, Any]:
        """JSON-able description (kind, model, layer, weights, feature_dim ...) recorded with the run."""
        ...

    def to(self, device: torch.device) -> "FeatureSource":
        """Move any model to ``device`` (where batches will be); return self."""
        ...

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """Features (B, D) of a batch on the source's device."""
        ...


def _to_tensor() -> list:
    return [transforms.ToImage(), transforms.ToDtype(torch.float32, scale=True)]


class PixelSource:
    """Pixels of the image resized (shorter edge) and centre-cropped to ``size``×``size``, in [0, 1], flattened.

    D = 3·size² (or size² when ``grayscale``).
    """

    def __init__(self, size: int = 16, grayscale: bool = False) -> None:
        if size < 1:
            raise LabelError(f"pixel size must be at least 1, got {size}")
        self.size = int(size)
        self.grayscale = bool(grayscale)
        self.name = f"pixels{self.size}{'gray' if self.grayscale else ''}"
        steps = [transforms.Resize(self.size, antialias=True), transforms.CenterCrop(self.size)]
        if self.grayscale:
            steps.append(transforms.Grayscale(1))
        self.transform = transforms.Compose(steps + _to_tensor())

    @property
    def feature_dim(self) -> int:
        return (1 if self.grayscale else 3) * self.size * self.size

    def describe(self) -> dict[str, Any]:
        return {"kind": "pixels", "name": self.name, "size": self.size, "grayscale": self.grayscale,
                "layer": "pixels", "feature_dim": self.feature_dim}

    def to(self, device: torch.device) -> "PixelSource":
        return self

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.flatten(start_dim=1).float()


class ModuleSource:
    """Features of a torch module (kept in eval mode) at one point, read by ``visreps.activations``.

    ``layer``: ``"output"`` (the module's output, e.g. a CLIP image embedding), ``"pre_logits"`` (timm models:
    the classifier's input, pooled features or the CLS token), ``"features"`` (timm models: the final-norm
    tokens of ``forward_features``), a default extraction point (``fc2_post``) or the dotted name of any
    submodule; the output is reduced by ``token`` (``reduce_tokens``).
    """

    def __init__(self, model: torch.nn.Module, layer: str, transform: Callable, name: str,
                 token: TokenRule = "auto", info: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.layer = layer
        self.token = token
        self.transform = transform
        self.name = name
        self.info = dict(info or {})
        self._device = torch.device("cpu")
        try:
            self._reader = ActivationReader(self.model, [layer], token)
        except ExtractionError as error:
            raise LabelError(f"model {name} has no layer {layer!r}: {error}") from None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "token": self.token, **self.info}

    def to(self, device: torch.device) -> "ModuleSource":
        self._device = torch.device(device)
        self.model.to(self._device)
        return self

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        try:
            return self._reader(batch.to(self._device))[self.layer]
        except ExtractionError as error:
            raise LabelError(f"{self.name}, layer {self.layer!r}: {error}") from None


def source_fingerprint(source: FeatureSource) -> str:
    """SHA-256 (first 16 hex) of ``describe()`` and, when the source has a ``model``, of its weights' bytes.

    Two sources with equal fingerprints compute the same features, whatever URI or file name they came from
    (a ``models:/name@alias`` that now points at another version gets another fingerprint).
    """
    digest = hashlib.sha256()
    described = {key: value for key, value in source.describe().items()
                 if key not in ("name", "weights", "uri", "run_id", "transform")}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    digest.update(str(getattr(source, "transform", "")).encode())
    model = getattr(source, "model", None)
    if isinstance(model, torch.nn.Module):
        digest.update(state_dict_fingerprint(model.state_dict()).encode())
    return digest.hexdigest()[:16]
