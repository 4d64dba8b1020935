"""torchvision and timm networks with weights from a local file or an existing cache, or random ones.

Nothing is downloaded. ``weights`` is one of:
- ``"cache"``: the model's default pretrained file where timm/torchvision would have cached it
  (torchvision: ``$TORCH_HOME/hub/checkpoints/<file>``; timm: the Hugging Face hub cache, else the torch hub
  checkpoints folder for URL-hosted weights); missing -> ModelError saying where to put it;
- a path to a state-dict file (``.pth``, ``.pt``, ``.bin``, ``.safetensors``);
- ``"random"``: untrained, initialised from ``seed`` (a control).

``build_torchvision_model`` / ``build_timm_model`` return a ``PretrainedNetwork``: the network in eval mode on
CPU, its eval preprocessing (PIL image in, normalised float tensor (3, H, W) out), the input side H = W in
pixels, and an info dict (kind, model, weights file or "random", seed, model_kwargs, transform text).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple
from urllib.parse import urlparse

import torch
from torch import nn

from visreps.models.registry import ModelError

WEIGHTS_CHOICES = "a file path, 'cache' or 'random'"


class PretrainedNetwork(NamedTuple):
    """A torchvision/timm network (eval mode, CPU), its eval transform, input side (pixels) and description."""

    model: nn.Module
    transform: Callable
    image_size: int
    info: dict[str, Any]


def _weights_location(weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist; check source.weights ({WEIGHTS_CHOICES})")
    return path


def _hub_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or torch file (``weights_only``), unwrapping ``state_dict``/``model``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch/safetensors raise many types; name the file
        raise ModelError(f"weights file {path} cannot be read ({error.__class__.__name__}: {error})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"weights file {path} does not hold a state dict")
    return state


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def check_torchvision_name(name: str) -> None:
    """Raise ModelError unless torchvision has a classification model ``name``."""
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ModelError(f"torchvision has no classification model {name!r}; see torchvision.models.list_models()")


def build_torchvision_model(name: str, weights: str = "cache", seed: int = 0,
                            model_kwargs: dict[str, Any] | None = None,
                            image_size: int | None = None) -> PretrainedNetwork:
    """A torchvision classification network (see the module docstring for ``weights``).

    ``model_kwargs`` go to ``torchvision.models.get_model``; ``image_size`` replaces the weights' crop size
    (the resize keeps the 256/224 ratio).
    """
    import torchvision

    check_torchvision_name(name)
    default_weights = torchvision.models.get_model_weights(name).DEFAULT
    if weights == "random":
        file = None
    elif weights == "cache":
        file = _hub_checkpoint(default_weights.url)
        if not file.is_file():
            raise ModelError(
                f"weights for torchvision model {name!r} are not in the cache: expected {file}. visreps never "
                f"downloads: fetch {default_weights.url} to that path (TORCH_HOME moves the cache), "
                "or set source.weights=/path/to/weights.pth"
            )
    else:
        file = _weights_location(weights)
    model = _seeded(lambda: torchvision.models.get_model(name, weights=None, **dict(model_kwargs or {})), seed)
    if file is not None:
        try:
            model.load_state_dict(read_state_dict(file))
        except RuntimeError as error:
            raise ModelError(f"weights file {file} does not fit torchvision model {name!r}: "
                             f"{str(error).splitlines()[0]}") from None
    sizes = {"crop_size": image_size, "resize_size": int(round(image_size * 256 / 224))} if image_size else {}
    transform = default_weights.transforms(**sizes)  # the weights' eval preprocessing (PIL in, normalised tensor out)
    side = int(image_size or transform.crop_size[0])
    info = {"kind": "torchvision", "model": name, "weights": "random" if file is None else str(file),
            "weights_enum": str(default_weights), "seed": seed, "model_kwargs": dict(model_kwargs or {}),
            "transform": str(transform)}
    return PretrainedNetwork(model.eval(), transform, side, info)


def _timm_cached_file(cfg: Any) -> tuple[Path | None, str]:
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


def check_timm_name(name: str) -> Any:
    """The pretrained config of timm model ``name`` (which may carry a tag); ModelError if timm lacks it."""
    import timm

    if not timm.is_model(name.split(".")[0]):
        raise ModelError(f"timm has no model {name!r}; see timm.list_models()")
    try:
        return timm.models.get_pretrained_cfg(name)
    except RuntimeError as error:
        raise ModelError(f"timm model {name!r}: {error} See timm.list_pretrained('{name.split('.')[0]}*')") from None


def build_timm_model(name: str, weights: str = "cache", seed: int = 0, model_kwargs: dict[str, Any] | None = None,
                     image_size: int | None = None) -> PretrainedNetwork:
    """A timm network (see the module docstring for ``weights``); ``name`` may carry a tag.

    ``model_kwargs`` go to ``timm.create_model`` (e.g. ``img_size=224`` for a DINOv2 ViT, whose position
    embeddings timm then resamples); ``image_size`` replaces the input size of the model's eval transform.
    """
    kwargs = dict(model_kwargs or {})
    import timm
    from timm.data import create_transform, resolve_data_config

    cfg = check_timm_name(name)
    if weights == "random":
        file = None
        model = _seeded(lambda: timm.create_model(name, pretrained=False, **kwargs), seed)
    else:
        if weights == "cache":
            file, where = _timm_cached_file(cfg)
            if file is None:
                raise ModelError(
                    f"weights for timm model {name!r} are not in any cache; visreps never downloads: put them in "
                    f"{where}, or set source.weights=/path/to/weights.safetensors"
                )
        else:
            file = _weights_location(weights)
        try:
            model = _seeded(lambda: timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": str(file), "source": ""}, **kwargs), seed)
        except (RuntimeError, KeyError, ValueError) as error:
            raise ModelError(f"weights file {file} does not fit timm model {name!r}: "
                             f"{str(error).splitlines()[0]}") from None
    overrides = {"input_size": (3, image_size, image_size)} if image_size else {}
    data_config = resolve_data_config(overrides, model=model)
    transform = create_transform(**data_config)
    info = {"kind": "timm", "model": name, "weights": "random" if file is None else str(file), "seed": seed,
            "model_kwargs": kwargs, "transform": str(transform)}
    return PretrainedNetwork(model.eval(), transform, int(data_config["input_size"][-1]), info)
