"""Read a network's activations at named extraction points: every point in one forward pass.

``ActivationReader(model, ["conv1_pre", "fc2_post"])(images)`` returns ``{point: Tensor (B, D)}``, float32
copies reduced per image by the token rule (D = C·H·W for feature maps with ``flatten``). Points are the
model's default extraction points (``visreps.models.extraction_points``), any submodule name of
``model.named_modules()``, ``output`` (the whole model's output) and, for timm models, ``features``
(``forward_features``: the final-norm tokens or feature map). Forward hooks copy what they capture (docs/method.md §10.1:
an in-place ReLU after the hooked module would otherwise change a captured ``*_pre`` tensor into the ``*_post``
one). The forward pass stops as soon as every requested point has been read, so reading an early layer costs
only the layers before it; a module that runs more than once is read at its first call.

This is the only place in visreps that hooks into a network: the labels stage's feature sources and the
evaluate stage both read through it.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from visreps.models.points import ExtractionError, ExtractionPoint, extraction_spec, resolve_points, unwrap_model

TokenRule = Literal["auto", "cls", "mean", "flatten"]
TOKEN_RULES = ("auto", "cls", "mean", "flatten")
#: points that are not modules: the model's output and (timm) the output of ``forward_features``
OUTPUT_POINT = "output"
FEATURES_POINT = "features"


class _AllPointsRead(Exception):
    """Raised by a hook once every requested point has been captured: the rest of the network is skipped."""


def reduce_tokens(output: torch.Tensor, rule: TokenRule) -> torch.Tensor:
    """(B, ...) activation -> (B, D).

    ``cls``: token 0 of a (B, N, D) output; ``mean``: mean over tokens (3-D) or spatial positions (4-D);
    ``flatten``: everything but the batch dimension; ``auto``: ``cls`` for 3-D outputs, ``flatten`` otherwise.
    """
    if rule == "auto":
        rule = "cls" if output.ndim == 3 else "flatten"
    if rule == "cls":
        if output.ndim != 3:
            raise ExtractionError(f"token rule 'cls' needs a (batch, tokens, dim) output, got shape {tuple(output.shape)}")
        return output[:, 0]
    if rule == "mean" and output.ndim >= 3:
        return output.mean(dim=1) if output.ndim == 3 else output.flatten(start_dim=2).mean(dim=2)
    if rule in ("mean", "flatten"):
        return output.flatten(start_dim=1)
    raise ExtractionError(f"unknown token rule {rule!r}; use one of {', '.join(TOKEN_RULES)}")


def _first_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise ExtractionError(f"extraction hook got a {type(value).__name__}, not a tensor")


def _is_timm(model: nn.Module) -> bool:
    return hasattr(model, "forward_features") and hasattr(model, "forward_head")


def reader_points(model: nn.Module, points: Sequence[str]) -> list[ExtractionPoint]:
    """Resolve point names: the model's own points and submodules, plus ``output`` and (timm) ``features``.

    ``features`` comes back as ``ExtractionPoint("features", "features")``: the reader captures it by calling
    ``forward_features`` itself (no module to hook).
    """
    model = unwrap_model(model)
    if len(set(points)) != len(points):
        raise ExtractionError(f"extraction points must be unique, got {list(points)}")
    known = {point.name for point in extraction_spec(model)} | {name for name, _ in model.named_modules() if name}
    resolved = []
    for name in points:
        if name in known:
            resolved.extend(resolve_points(model, [name]))
        elif name == OUTPUT_POINT:
            resolved.append(ExtractionPoint(OUTPUT_POINT, ""))
        elif name == FEATURES_POINT and _is_timm(model):
            resolved.append(ExtractionPoint(FEATURES_POINT, FEATURES_POINT))
        else:
            resolve_points(model, [name])  # raises, listing the model's points
    return resolved


class ActivationReader:
    """Read named points of ``model`` during one forward pass (see the module docstring).

    The model is used in the mode it is in (visreps' loaders return it in eval mode) under
    ``torch.inference_mode``. Hooks are removed by ``close()`` or on leaving a ``with`` block.
    """

    def __init__(self, model: nn.Module, points: Sequence[str], token: TokenRule = "flatten") -> None:
        if token not in TOKEN_RULES:
            raise ExtractionError(f"unknown token rule {token!r}; use one of {', '.join(TOKEN_RULES)}")
        if not points:
            raise ExtractionError("no extraction points requested")
        self.model = model
        self.token = token
        self.points = reader_points(model, list(points))
        self._captured: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._open = True
        self._reading = False
        plain = unwrap_model(model)
        modules = dict(plain.named_modules())
        for point in self.points:
            if self._reads_features(point):
                continue
            module = modules[point.module] if point.module else plain
            if point.capture == "input":
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(point.name)))
            else:
                self._handles.append(module.register_forward_hook(self._hook(point.name)))

    @staticmethod
    def _reads_features(point: ExtractionPoint) -> bool:
        return point.name == FEATURES_POINT and point.module == FEATURES_POINT

    @property
    def names(self) -> list[str]:
        return [point.name for point in self.points]

    def _store(self, name: str, value) -> None:
        if not self._reading or name in self._captured:  # the model is used outside this reader, or ran twice
            return
        tensor = _first_tensor(value).detach()
        self._captured[name] = reduce_tokens(tensor.to(dtype=torch.float32, copy=True), self.token)
        if len(self._captured) == len(self.points):
            raise _AllPointsRead

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self._store(name, output)
        return hook

    def _pre_hook(self, name: str):
        def hook(module, inputs):
            self._store(name, inputs)
        return hook

    def _forward(self, images: torch.Tensor) -> None:
        if any(self._reads_features(point) for point in self.points):
            plain = unwrap_model(self.model)
            features = plain.forward_features(images)
            self._store(FEATURES_POINT, features)
            plain.forward_head(features)
        else:
            self.model(images)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{point: Tensor (B, D) float32}`` for a batch ``images`` (B, C, H, W) on the model's device."""
        if not self._open:
            raise ExtractionError("this ActivationReader was closed; create a new one")
        self._captured, self._reading = {}, True
        try:
            with torch.inference_mode():
                self._forward(images)
        except _AllPointsRead:
            pass
        finally:
            self._reading = False
        missing = [name for name in self.names if name not in self._captured]
        if missing:
            raise ExtractionError(f"extraction points {missing} did not run during the forward pass")
        captured, self._captured = self._captured, {}
        return {name: captured[name] for name in self.names}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._open = False

    def __enter__(self) -> "ActivationReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
