"""Named extraction points and the hook-based feature extractor every model shares.

A point is a module of the network whose output (or, for ``pre_logits``, whose input) is read by a forward
hook. Default points per family:

- CustomCNN: the 14 points ``conv1_pre``/``conv1_post`` .. ``fc2_pre``/``fc2_post`` (SPEC §3).
- timm models: the stage/block outputs timm itself lists in ``model.feature_info`` (ResNet ``act1``,
  ``layer1``..``layer4``; ConvNeXt ``stages.0``..``stages.3``; ViT ``blocks.0``..``blocks.11``; EfficientNet,
  RegNet, Swin ... likewise), then ``pre_logits`` (the input of the classifier: pooled features) and ``logits``.
- any other module: its top-level children.

Any submodule name of ``model.named_modules()`` (e.g. ``layer3.2.conv1``) is accepted as a point too: it reads
that module's output. Hooks copy what they capture (SPEC §10.1: an in-place ReLU after the hooked module would
otherwise silently change a captured ``*_pre`` tensor into the ``*_post`` one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from visreps.errors import VisrepsError


class ExtractionError(VisrepsError, KeyError):
    """An extraction point name is unknown for this model; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ExtractionPoint:
    """``name`` reads the ``capture`` ("output" or "input") of submodule ``module`` ("" = the whole model)."""

    name: str
    module: str
    capture: Literal["output", "input"] = "output"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain network inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def _timm_spec(model: nn.Module) -> list[ExtractionPoint]:
    points = [ExtractionPoint(info["module"], info["module"]) for info in model.feature_info]
    classifier = model.get_classifier()
    modules = {id(module): name for name, module in model.named_modules()}
    classifier_name = modules.get(id(classifier))
    if classifier_name:
        points.append(ExtractionPoint("pre_logits", classifier_name, "input"))
    points.append(ExtractionPoint("logits", ""))
    return points


def extraction_spec(model: nn.Module) -> list[ExtractionPoint]:
    """The default points of ``model`` (see the module docstring), in network order."""
    model = unwrap_model(model)
    if hasattr(model, "extraction_spec"):
        return list(model.extraction_spec())
    if isinstance(getattr(model, "feature_info", None), list) and hasattr(model, "get_classifier"):
        return _timm_spec(model)
    return [ExtractionPoint(name, name) for name, _ in model.named_children()]


def extraction_points(model: nn.Module) -> list[str]:
    """Names of the default extraction points of ``model``, in network order."""
    return [point.name for point in extraction_spec(model)]


def resolve_points(model: nn.Module, points: list[str]) -> list[ExtractionPoint]:
    """Map point names (defaults or submodule names) to ExtractionPoints; ExtractionError on unknown names."""
    model = unwrap_model(model)
    defaults = {point.name: point for point in extraction_spec(model)}
    modules = dict(model.named_modules())
    resolved = []
    for name in points:
        if name in defaults:
            resolved.append(defaults[name])
        elif name in modules and name:
            resolved.append(ExtractionPoint(name, name))
        else:
            raise ExtractionError(
                f"unknown extraction point {name!r} for {type(model).__name__}; default points: "
                f"{', '.join(defaults)} (any submodule name of model.named_modules() also works)"
            )
    if len(set(points)) != len(points):
        raise ExtractionError(f"extraction points must be unique, got {points}")
    return resolved


def _first_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise ExtractionError(f"extraction hook got a {type(value).__name__}, not a tensor")


class FeatureExtractor:
    """Read named points of ``model`` during one forward pass.

    ``FeatureExtractor(model, ["conv1_pre", "fc2_post"])(images)`` returns ``{point: Tensor (B, D)}``, float32
    copies flattened per image (D = C·H·W for feature maps, tokens·width for transformer blocks). The model is
    used in the mode it is in (``load()`` returns it in eval mode) under ``torch.no_grad``. Hooks are removed by
    ``close()`` or on leaving a ``with`` block.
    """

    def __init__(self, model: nn.Module, points: list[str]) -> None:
        self.model = model
        self.points = resolve_points(model, list(points))
        self._captured: dict[str, torch.Tensor] = {}
        modules = dict(unwrap_model(model).named_modules())
        self._handles = []
        for point in self.points:
            module = modules[point.module]
            if point.capture == "input":
                handle = module.register_forward_pre_hook(self._pre_hook(point.name))
            else:
                handle = module.register_forward_hook(self._hook(point.name))
            self._handles.append(handle)

    def _store(self, name: str, value) -> None:
        tensor = _first_tensor(value).detach()
        self._captured[name] = tensor.to(dtype=torch.float32, copy=True).reshape(tensor.shape[0], -1)

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self._store(name, output)
        return hook

    def _pre_hook(self, name: str):
        def hook(module, inputs):
            self._store(name, inputs)
        return hook

    @property
    def names(self) -> list[str]:
        return [point.name for point in self.points]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self._handles:
            raise ExtractionError("this FeatureExtractor was closed; create a new one")
        self._captured = {}
        with torch.no_grad():
            self.model(images)
        missing = [name for name in self.names if name not in self._captured]
        if missing:
            raise ExtractionError(f"extraction points {missing} did not fire during the forward pass")
        captured, self._captured = self._captured, {}
        return {name: captured[name] for name in self.names}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "FeatureExtractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
