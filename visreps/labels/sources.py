"""Feature sources: what turns an image into one feature vector for PCA labels.

Any object with the ``FeatureSource`` shape works (the stage layer wraps visreps' own trained models the
same way). Here: ``PixelSource`` (downsampled pixels, a learned-feature-free control) and ``ModuleSource``
(any torch module, features read at a named submodule, ``"output"`` or timm's ``"pre_logits"``);
``visreps.labels.pretrained`` builds ModuleSources for timm and torchvision models.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Literal, Protocol, runtime_checkable

import torch
from PIL import Image
from torchvision.transforms import v2 as transforms

from visreps.fingerprints import state_dict_fingerprint
from visreps.labels.errors import LabelError

TokenRule = Literal["auto", "cls", "mean", "flatten"]


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


class _Captured(Exception):
    """Raised by a capture hook to stop the forward pass once the wanted layer has run."""


def reduce_tokens(output: torch.Tensor, rule: TokenRule) -> torch.Tensor:
    """(B, ...) layer output -> (B, D): ``cls`` = token 0 of (B, N, D); ``mean`` = mean over tokens
    (3-D) or spatial positions (4-D); ``flatten``; ``auto`` = cls for 3-D outputs, flatten otherwise."""
    if rule == "auto":
        rule = "cls" if output.ndim == 3 else "flatten"
    if rule == "cls":
        if output.ndim != 3:
            raise LabelError(f"token rule 'cls' needs a (batch, tokens, dim) output, got shape {tuple(output.shape)}")
        return output[:, 0]
    if rule == "mean" and output.ndim >= 3:
        return output.mean(dim=1) if output.ndim == 3 else output.flatten(start_dim=2).mean(dim=2)
    if rule in ("mean", "flatten"):
        return output.flatten(start_dim=1)
    raise LabelError(f"unknown token rule {rule!r}; use auto, cls, mean or flatten")


class ModuleSource:
    """Features of a torch module (kept in eval mode) at ``layer``.

    ``layer``: ``"output"`` (the module's output, e.g. a CLIP image embedding), ``"pre_logits"`` (timm models:
    ``forward_head(forward_features(x), pre_logits=True)``, the CLS token of token-pooled ViTs), ``"features"``
    (timm models: ``forward_features(x)``, final-norm tokens, reduced by ``token``: CLS by default), or the
    dotted name of a submodule whose output is captured by a forward hook (copied at once, so a later in-place
    ReLU cannot change it) and reduced by ``token``.
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
        if layer in ("pre_logits", "features"):
            if not (hasattr(model, "forward_head") and hasattr(model, "forward_features")):
                raise LabelError(f"layer {layer!r} needs a timm model (forward_features); {name} has none: name a module")
        elif layer != "output":
            modules = dict(model.named_modules())
            if layer not in modules:
                names = [n for n in modules if n][:40]
                raise LabelError(f"model {name} has no layer {layer!r}; known layers include: {', '.join(names)}")
            self._module = modules[layer]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "token": self.token, **self.info}

    def to(self, device: torch.device) -> "ModuleSource":
        self._device = torch.device(device)
        self.model.to(self._device)
        return self

    @torch.inference_mode()
    def features(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self._device)
        if self.layer == "output":
            output = self.model(batch)
        elif self.layer == "pre_logits":
            output = self.model.forward_head(self.model.forward_features(batch), pre_logits=True)
        elif self.layer == "features":
            output = self.model.forward_features(batch)
        else:
            output = self._capture(batch)
        if isinstance(output, (tuple, list)):
            output = output[0]
        return reduce_tokens(output, self.token).float()

    def _capture(self, batch: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            captured.append(tensor.detach().clone())
            raise _Captured

        handle = self._module.register_forward_hook(hook)
        try:
            self.model(batch)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise LabelError(f"layer {self.layer!r} of {self.name} did not run in the forward pass; choose another layer")
        return captured[0]


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
