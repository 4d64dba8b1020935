"""timm and torchvision models as feature sources, with weights from a local file or an existing cache.

The networks, their weights (``"cache"``, a file or ``"random"``; nothing is downloaded) and eval transforms
come from ``visreps.models.pretrained``; its ModelErrors are raised here as LabelErrors with the same message.

Default layers (``layer=""``): torchvision AlexNet ``classifier.5`` (second FC after ReLU, 4096-d), VGG
``classifier.4``, ViT ``encoder`` CLS token, ResNet/RegNet/EfficientNet ``avgpool``, ConvNeXt ``classifier.1``;
timm models ``pre_logits`` (CLS token for ViTs such as DINOv2 or supervised ViT-L/16), except CLIP-like
models (name contains ``clip``/``siglip``), whose ``output`` is the image embedding, and DINOv3 (timm pools
it by averaging), whose ``features`` CLS token (after the final norm) is used.
"""

from __future__ import annotations

from typing import Any, Callable

from visreps.labels.errors import LabelError
from visreps.labels.sources import ModuleSource, TokenRule
from visreps.models.pretrained import PretrainedNetwork, build_timm_model, build_torchvision_model
from visreps.models.registry import ModelError

_TORCHVISION_LAYERS: tuple[tuple[str, str, TokenRule], ...] = (
    ("alexnet", "classifier.5", "flatten"),
    ("vgg", "classifier.4", "flatten"),
    ("vit_", "encoder", "cls"),
    ("resnet", "avgpool", "flatten"),
    ("resnext", "avgpool", "flatten"),
    ("wide_resnet", "avgpool", "flatten"),
    ("regnet", "avgpool", "flatten"),
    ("efficientnet", "avgpool", "flatten"),
    ("mobilenet", "avgpool", "flatten"),
    ("convnext", "classifier.1", "flatten"),
)


def default_layer(library: str, name: str) -> tuple[str, TokenRule]:
    """(layer, token rule) used when the config leaves ``source.layer`` empty."""
    base = name.split(".")[0].lower()
    if library == "timm":
        if "clip" in base or "siglip" in base:
            return "output", "auto"
        return ("features", "cls") if "dinov3" in base else ("pre_logits", "auto")
    for prefix, layer, token in _TORCHVISION_LAYERS:
        if base.startswith(prefix):
            return layer, token
    raise LabelError(
        f"no default feature layer is known for torchvision model {name!r}; set source.layer to a module name "
        "(e.g. the penultimate layer) or to 'output'"
    )


def _as_label_error(build: Callable[[], PretrainedNetwork]) -> PretrainedNetwork:
    try:
        return build()
    except ModelError as error:
        raise LabelError(str(error)) from None


def build_torchvision_source(name: str, weights: str = "cache", layer: str = "", token: TokenRule = "auto",
                             seed: int = 0, model_kwargs: dict[str, Any] | None = None,
                             image_size: int | None = None) -> ModuleSource:
    """A torchvision classification model as a feature source (``weights``: see ``visreps.models.pretrained``).

    ``model_kwargs`` go to ``torchvision.models.get_model``; ``image_size`` replaces the weights' crop size
    (the resize keeps the 256/224 ratio).
    """
    network = _as_label_error(lambda: build_torchvision_model(name, weights, seed, model_kwargs, image_size))
    chosen_layer, chosen_token = (layer, token) if layer else default_layer("torchvision", name)
    return ModuleSource(network.model, chosen_layer, network.transform, f"torchvision:{name}", chosen_token,
                        network.info)


def build_timm_source(name: str, weights: str = "cache", layer: str = "", token: TokenRule = "auto",
                      seed: int = 0, model_kwargs: dict[str, Any] | None = None,
                      image_size: int | None = None) -> ModuleSource:
    """A timm model as a feature source (``weights``: see ``visreps.models.pretrained``); ``name`` may carry a tag.

    ``model_kwargs`` go to ``timm.create_model`` (e.g. ``img_size=224`` for a DINOv2 ViT, whose position
    embeddings timm then resamples); ``image_size`` replaces the input size of the model's eval transform.
    """
    network = _as_label_error(lambda: build_timm_model(name, weights, seed, model_kwargs, image_size))
    chosen_layer, chosen_token = (layer, token) if layer else default_layer("timm", name)
    return ModuleSource(network.model, chosen_layer, network.transform, f"timm:{name}", chosen_token, network.info)
