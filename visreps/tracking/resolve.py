"""One resolver for every model spec a user can give: ``resolve_model(spec) -> ResolvedModel``.

Specs:
- ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run_id>/<artifact path>``: networks trained
  by visreps, fetched from the configured tracking store;
- a path: a visreps model file, a training checkpoint or a folder holding ``model.pt``;
- ``timm:<name>`` / ``torchvision:<name>``: a timm or torchvision network with ``weights`` ``"cache"`` (the
  default pretrained file where timm/torchvision cache it), a local weights file or ``"random"`` (from ``seed``);
  nothing is downloaded (``visreps.models.pretrained``).
The spec is checked (scheme, file, registry entry, timm/torchvision name, cached weights) before any network
is built; a spec that does not resolve raises one ModelError naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from visreps.fingerprints import state_dict_fingerprint
from visreps.models import extraction_points
from visreps.models.files import MODEL_FILE, LoadedModel
from visreps.models.pretrained import PretrainedNetwork, build_timm_model, build_torchvision_model
from visreps.models.registry import ModelError
from visreps.models.transforms import metadata_transform
from visreps.tracking.registry import find_registered_version, load_model, registered_model_name

ACCEPTED_SPECS = ("models:/<name>@<alias>, models:/<name>/<version>, runs:/<run_id>/<artifact path>, "
                  "a visreps model file / checkpoint / folder with model.pt, timm:<name>, torchvision:<name>")
PRETRAINED_SCHEMES = ("timm:", "torchvision:")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
#: ResolvedModel.provenance keys, each recorded as the run tag ``visreps.<key>`` when known
PROVENANCE_KEYS = ("registered_model", "model_version", "model_run_id", "K", "label_source", "seed",
                   "architecture", "epoch")


@dataclass
class ResolvedModel:
    """A network ready for feature extraction and what an evaluation records about it.

    ``model``: eval mode, on the requested device. ``transform``: PIL image -> normalised float32 (3, S, S) with
    S = ``image_size`` pixels. ``points``: default extraction points (``visreps.models.extraction_points``).
    ``metadata``: the model file's metadata (visreps networks) or the timm/torchvision description.
    ``provenance``: the known values among ``PROVENANCE_KEYS``.
    """

    model: nn.Module
    transform: Callable
    image_size: int
    spec: str
    weights_fingerprint: str
    points: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        """Run tags of an evaluation of this model: ``visreps.model``, ``visreps.weights_fingerprint`` and
        ``visreps.<key>`` for each known provenance key (strings)."""
        tags = {"visreps.model": self.spec, "visreps.weights_fingerprint": self.weights_fingerprint}
        tags.update({f"visreps.{key}": str(self.provenance[key]) for key in PROVENANCE_KEYS
                     if self.provenance.get(key) is not None})
        return tags


def _unresolved(spec: str, reason: str, list_forms: bool = False) -> ModelError:
    forms = f"; accepted specs: {ACCEPTED_SPECS}" if list_forms else ""
    return ModelError(f"cannot resolve model {spec!r}: {reason}{forms}")


def _trained_provenance(spec: str, metadata: dict[str, Any]) -> dict[str, Any]:
    provenance = {key: metadata.get(key) for key in ("K", "label_source", "seed", "architecture", "epoch")}
    provenance["model_run_id"] = metadata.get("run_id")
    provenance["registered_model"] = metadata.get("registered_model")
    provenance["model_version"] = metadata.get("version")
    if spec.startswith("runs:/") and provenance["registered_model"] is None:
        artifact_path = spec[len("runs:/"):].strip("/").split("/", 1)[1]
        name = registered_model_name(str(metadata["architecture"]))
        version = find_registered_version(name, str(metadata["run_id"]), artifact_path.rstrip("/"))
        if version is not None:
            provenance["registered_model"], provenance["model_version"] = name, int(version.version)
    return provenance


def _resolve_trained(spec: str, source: str, device: str | torch.device, image_size: int | None) -> ResolvedModel:
    """A visreps network from ``source`` (the URI, or the spec's path expanded)."""
    try:
        loaded: LoadedModel = load_model(source, device)
    except ModelError as error:
        raise _unresolved(spec, str(error)) from None
    metadata = loaded.metadata
    size = int(image_size or metadata["image_size"])
    return ResolvedModel(
        model=loaded.model.eval(), transform=metadata_transform(metadata, size), image_size=size, spec=spec,
        weights_fingerprint=state_dict_fingerprint(loaded.model.state_dict()), points=list(loaded.points),
        metadata=metadata, provenance=_trained_provenance(spec, metadata),
    )


def _resolve_pretrained(spec: str, weights: str, seed: int, device: str | torch.device,
                        image_size: int | None) -> ResolvedModel:
    library, name = spec.split(":", 1)
    if not name:
        raise _unresolved(spec, f"no model name after '{library}:' (e.g. {library}:resnet18)", list_forms=True)
    build = build_timm_model if library == "timm" else build_torchvision_model
    try:
        network: PretrainedNetwork = build(name, weights, seed, None, image_size)
    except ModelError as error:
        raise _unresolved(spec, str(error)) from None
    model = network.model.to(device).eval()
    provenance = {"architecture": spec, "seed": seed,
                  "label_source": "random" if network.info["weights"] == "random" else "pretrained"}
    return ResolvedModel(
        model=model, transform=network.transform, image_size=network.image_size, spec=spec,
        weights_fingerprint=state_dict_fingerprint(model.state_dict()), points=extraction_points(model),
        metadata=dict(network.info), provenance=provenance,
    )


def resolve_model(spec: str, *, weights: str = "cache", seed: int = 0, device: str | torch.device = "cpu",
                  image_size: int | None = None) -> ResolvedModel:
    """The network a model spec names (see the module docstring), in eval mode on ``device``.

    ``weights`` and ``seed`` apply to ``timm:``/``torchvision:`` specs (a visreps network brings its own);
    ``image_size`` (pixels) replaces the input side of the eval transform (default: the model's).
    """
    spec = str(spec)
    if spec.startswith(PRETRAINED_SCHEMES):
        return _resolve_pretrained(spec, weights, seed, device, image_size)
    if weights != "cache":
        raise _unresolved(spec, f"weights={weights!r} applies to timm:<name> and torchvision:<name> specs only; "
                                "a visreps network is loaded with its own weights")
    if spec.startswith(("models:/", "runs:/")):
        if spec.startswith("runs:/") and "/" not in spec[len("runs:/"):].strip("/"):
            raise _unresolved(spec, "a runs:/ URI names a run and an artifact: runs:/<run_id>/model")
        return _resolve_trained(spec, spec, device, image_size)
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir() and not (path / MODEL_FILE).is_file():
            raise _unresolved(spec, f"folder {path} holds no {MODEL_FILE}", list_forms=True)
        return _resolve_trained(spec, str(path), device, image_size)
    if _SCHEME.match(spec):
        raise _unresolved(spec, f"unknown scheme {spec.split(':', 1)[0] + ':'!r}", list_forms=True)
    raise _unresolved(spec, f"no such file or folder {path}", list_forms=True)

