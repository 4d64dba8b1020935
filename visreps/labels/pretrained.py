"""timm and torchvision models as feature sources, with weights from a local file or an existing cache.

Nothing is downloaded. ``weights`` is one of:
- ``"cache"``: the model's default pretrained file where timm/torchvision would have cached it
  (torchvision: ``$TORCH_HOME/hub/checkpoints/<file>``; timm: the Hugging Face hub cache, else the torch hub
  checkpoints folder for URL-hosted weights); missing -> LabelError saying where to put it;
- a path to a state-dict file (``.pth``, ``.pt``, ``.bin``, ``.safetensors``);
- ``"random"``: untrained, initialised from ``seed`` (a control).

Default layers (``layer=""``): torchvision AlexNet ``classifier.5`` (second FC after ReLU, 4096-d), VGG
``classifier.4``, ViT ``encoder`` CLS token, ResNet/RegNet/EfficientNet ``avgpool``, ConvNeXt ``classifier.1``;
timm models ``pre_logits`` (CLS token for ViTs such as DINOv2 or supervised ViT-L/16), except CLIP-like
models (name contains ``clip``/``siglip``), whose ``output`` is the image embedding, and DINOv3 (timm pools
it by averaging), whose ``features`` CLS token (after the final norm) is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from visreps.labels.errors import LabelError
from visreps.labels.sources import ModuleSource, TokenRule

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


def _weights_location(weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise LabelError(f"weights file {path} does not exist; check source.weights (a file path, 'cache' or 'random')")
    return path


def _hub_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch/safetensors raise many types; name the file
        raise LabelError(f"weights file {path} cannot be read ({error.__class__.__name__}: {error})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise LabelError(f"weights file {path} does not hold a state dict")
    return state


def _seeded(build, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_torchvision_source(name: str, weights: str = "cache", layer: str = "", token: TokenRule = "auto",
                             seed: int = 0, model_kwargs: dict[str, Any] | None = None,
                             image_size: int | None = None) -> ModuleSource:
    """A torchvision classification model as a feature source (see module docstring for ``weights``).

    ``model_kwargs`` go to ``torchvision.models.get_model``; ``image_size`` replaces the weights' crop size
    (the resize keeps the 256/224 ratio).
    """
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise LabelError(f"torchvision has no classification model {name!r}; see torchvision.models.list_models()")
    default_weights = torchvision.models.get_model_weights(name).DEFAULT
    if weights == "random":
        file = None
    elif weights == "cache":
        file = _hub_checkpoint(default_weights.url)
        if not file.is_file():
            raise LabelError(
                f"weights for torchvision model {name!r} are not in the cache: expected {file}. visreps never "
                f"downloads: fetch {default_weights.url} to that path (TORCH_HOME moves the cache), "
                "or set source.weights=/path/to/weights.pth"
            )
    else:
        file = _weights_location(weights)
    model = _seeded(lambda: torchvision.models.get_model(name, weights=None, **dict(model_kwargs or {})), seed)
    if file is not None:
        try:
            model.load_state_dict(_read_state_dict(file))
        except RuntimeError as error:
            raise LabelError(f"weights file {file} does not fit torchvision model {name!r}: {str(error).splitlines()[0]}") from None
    chosen_layer, chosen_token = (layer, token) if layer else default_layer("torchvision", name)
    sizes = {"crop_size": image_size, "resize_size": int(round(image_size * 256 / 224))} if image_size else {}
    transform = default_weights.transforms(**sizes)  # the weights' eval preprocessing (PIL in, normalised tensor out)
    info = {"kind": "torchvision", "model": name, "weights": "random" if file is None else str(file),
            "weights_enum": str(default_weights), "seed": seed, "model_kwargs": dict(model_kwargs or {}),
            "transform": str(transform)}
    return ModuleSource(model, chosen_layer, transform, f"torchvision:{name}", token if layer else chosen_token, info)


def _timm_cached_file(name: str, cfg: Any) -> tuple[Path | None, str]:
    """(cached file or None, where it should go) for a timm model's default pretrained weights."""
    places: list[str] = []
    if cfg is not None and cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in filenames:
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found), ""
        places.append(f"the Hugging Face cache (`huggingface-cli download {cfg.hf_hub_id} {filenames[0]}`)")
    if cfg is not None and cfg.url:
        file = _hub_checkpoint(cfg.url)
        if file.is_file():
            return file, ""
        places.append(f"{file} (from {cfg.url})")
    return None, " or ".join(places) or "a local file"


def build_timm_source(name: str, weights: str = "cache", layer: str = "", token: TokenRule = "auto",
                      seed: int = 0, model_kwargs: dict[str, Any] | None = None,
                      image_size: int | None = None) -> ModuleSource:
    """A timm model as a feature source (see module docstring for ``weights``); ``name`` may carry a tag.

    ``model_kwargs`` go to ``timm.create_model`` (e.g. ``img_size=224`` for a DINOv2 ViT, whose position
    embeddings timm then resamples); ``image_size`` replaces the input size of the model's eval transform.
    """
    kwargs = dict(model_kwargs or {})
    import timm
    from timm.data import create_transform, resolve_data_config

    if not timm.is_model(name.split(".")[0]):
        raise LabelError(f"timm has no model {name!r}; see timm.list_models()")
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as error:
        raise LabelError(f"timm model {name!r}: {error} See timm.list_pretrained('{name.split('.')[0]}*')") from None
    if weights == "random":
        file = None
        model = _seeded(lambda: timm.create_model(name, pretrained=False, **kwargs), seed)
    else:
        if weights == "cache":
            file, where = _timm_cached_file(name, cfg)
            if file is None:
                raise LabelError(
                    f"weights for timm model {name!r} are not in any cache; visreps never downloads: put them in "
                    f"{where}, or set source.weights=/path/to/weights.safetensors"
                )
        else:
            file = _weights_location(weights)
        try:
            model = _seeded(lambda: timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": str(file), "source": ""}, **kwargs), seed)
        except (RuntimeError, KeyError, ValueError) as error:
            raise LabelError(f"weights file {file} does not fit timm model {name!r}: {str(error).splitlines()[0]}") from None
    overrides = {"input_size": (3, image_size, image_size)} if image_size else {}
    transform = create_transform(**resolve_data_config(overrides, model=model))
    chosen_layer, chosen_token = (layer, token) if layer else default_layer("timm", name)
    info = {"kind": "timm", "model": name, "weights": "random" if file is None else str(file), "seed": seed,
            "model_kwargs": kwargs, "transform": str(transform)}
    return ModuleSource(model, chosen_layer, transform, f"timm:{name}", token if layer else chosen_token, info)
