"""The model registry: architecture name -> network built from scratch (never pretrained, nothing downloaded).

Names: ``custom_cnn`` (docs/method.md §2, 224×224), ``custom_cnn_small`` (the 64×64 demo variant) and ``timm:<name>``
for any architecture timm knows (``timm:resnet50``, ``timm:convnext_tiny``, ``timm:vit_small_patch16_224``...),
created with ``pretrained=False``. Extra keyword arguments go to the constructor (e.g. ``img_size=64`` for a
timm ViT, ``dropout=0.5`` for CustomCNN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from visreps.errors import VisrepsError
from visreps.models.custom_cnn import CustomCNN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_PREFIX = "timm:"
#: timm architectures named in the study; any other timm name works too
TIMM_EXAMPLES = ("timm:resnet50", "timm:convnext_tiny", "timm:vit_small_patch16_224")


class ModelError(VisrepsError, ValueError):
    """An unknown architecture, a bad class count or an unusable model file; the message says how to fix it."""


@dataclass(frozen=True)
class Builtin:
    build: Callable[..., nn.Module]
    image_size: int


BUILTINS: dict[str, Builtin] = {
    "custom_cnn": Builtin(CustomCNN, 224),
    "custom_cnn_small": Builtin(CustomCNN.small, 64),
}


def list_models(include_all_timm: bool = False) -> list[str]:
    """Architecture names: the built-ins and the study's timm examples (every timm name with ``include_all_timm``)."""
    names = list(BUILTINS) + list(TIMM_EXAMPLES)
    if include_all_timm:
        import timm

        names = list(BUILTINS) + [TIMM_PREFIX + name for name in timm.list_models()]
    return names


def _timm_name(name: str) -> str:
    import timm

    timm_name = name[len(TIMM_PREFIX):]
    if not timm_name or not timm.is_model(timm_name):
        close = timm.list_models(f"*{timm_name.split('_')[0]}*")[:8] if timm_name else []
        hint = f"; similar timm names: {', '.join(close)}" if close else ""
        raise ModelError(f"unknown architecture {name!r}: timm has no model {timm_name!r}{hint}")
    return timm_name


def check_architecture(name: str) -> None:
    """Raise ModelError (listing the known names) unless ``name`` can be built."""
    if name in BUILTINS:
        return
    if name.startswith(TIMM_PREFIX):
        _timm_name(name)
        return
    raise ModelError(
        f"unknown architecture {name!r}; known: {', '.join(BUILTINS)}, or 'timm:<name>' for any timm "
        f"architecture (e.g. {', '.join(TIMM_EXAMPLES)})"
    )


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """A freshly initialised network ``name`` with ``num_classes`` outputs (see the module docstring)."""
    check_architecture(name)
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ModelError(f"num_classes must be an integer >= 2 to train a classifier, got {num_classes!r}")
    num_classes = int(num_classes)
    try:
        if name in BUILTINS:
            return BUILTINS[name].build(num_classes, **kwargs)
        import timm

        return timm.create_model(_timm_name(name), pretrained=False, num_classes=num_classes, **kwargs)
    except TypeError as error:
        raise ModelError(f"architecture {name!r} does not accept the options {sorted(kwargs)}: {error}") from None


def default_image_size(name: str, **kwargs: Any) -> int:
    """The input side length ``name`` is designed for (224 for most, 64 for custom_cnn_small)."""
    check_architecture(name)
    if name in BUILTINS:
        return BUILTINS[name].image_size
    if "img_size" in kwargs:
        size = kwargs["img_size"]
        return int(size if isinstance(size, int) else size[0])
    import timm

    config = timm.get_pretrained_cfg(_timm_name(name))
    input_size = getattr(config, "input_size", None) if config is not None else None
    return int(input_size[-1]) if input_size else 224

