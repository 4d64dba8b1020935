"""Named extraction points of every model (read through ``visreps.activations.ActivationReader``).

A point is a module of the network whose output (or, for ``pre_logits``, whose input) is read by a forward
hook. Default points per family:

- CustomCNN: the 14 points ``conv1_pre``/``conv1_post`` .. ``fc2_pre``/``fc2_post`` (docs/method.md §3).
- timm models: the stage/block outputs timm itself lists in ``model.feature_info`` (ResNet ``act1``,
  ``layer1``..``layer4``; ConvNeXt ``stages.0``..``stages.3``; ViT ``blocks.0``..``blocks.11``; EfficientNet,
  RegNet, Swin ... likewise), then ``pre_logits`` (the input of the classifier: pooled features) and ``logits``.
- any other module: its top-level children.

Any submodule name of ``model.named_modules()`` (e.g. ``layer3.2.conv1``) is accepted as a point too: it reads
that module's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
