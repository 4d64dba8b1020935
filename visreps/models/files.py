"""Model files and ``load()``: a trained network is a state dict plus metadata, rebuilt through ``create_model``.

A model file (``model.pt``) holds ``{"format": "visreps-model", "format_version": 1, "state_dict": ...,
"metadata": {...}}`` with only tensors and plain values, so it loads with ``torch.load(weights_only=True)`` and
survives refactors of the classes (nothing is pickled by class). ``load()`` also accepts a full training
checkpoint (``visreps-checkpoint``, see ``visreps.training.checkpoints``) and a folder holding ``model.pt``.
Local files only: the MLflow URIs ``runs:/...`` and ``models:/...`` are ``visreps.tracking.load_model``'s.

Metadata keys: architecture, model_kwargs, num_classes, image_size, mean, std, label_source, label_table, K,
seed, epoch, config_hash, and run_id / registered_model / version / alias when it came from MLflow.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visreps.models.points import extraction_points, unwrap_model
from visreps.models.registry import ModelError, create_model

MODEL_FORMAT = "visreps-model"
CHECKPOINT_FORMAT = "visreps-checkpoint"
MODEL_FILE = "model.pt"
REQUIRED_METADATA = ("architecture", "num_classes", "image_size")
MLFLOW_URI_SCHEMES = ("runs:/", "models:/")


@dataclass
class LoadedModel:
    """A network ready for extraction (eval mode, CPU unless asked) with what is known about it."""

    model: nn.Module
    metadata: dict[str, Any]
    points: list[str] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        return str(self.metadata["architecture"])

    @property
    def image_size(self) -> int:
        return int(self.metadata["image_size"])


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes from state-dict keys."""
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


def atomic_torch_save(payload: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: a killed save never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def save_model_file(path: str | Path, model: nn.Module, metadata: dict[str, Any]) -> Path:
    """Write ``model``'s weights (on CPU) and ``metadata`` as a model file at ``path`` (atomically)."""
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ModelError(f"model metadata lacks {missing}; cannot write {path}")
    state = {key: value.detach().cpu() for key, value in unwrap_model(model).state_dict().items()}
    payload = {"format": MODEL_FORMAT, "format_version": 1, "state_dict": state, "metadata": dict(metadata)}
    return atomic_torch_save(payload, path)


def read_weights_file(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelError(
            f"{path} is not a visreps weights file (it needs arbitrary pickled objects: {str(error).splitlines()[0]}); "
            "only state-dict files written by visreps are loaded"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ModelError(f"{path} is not a readable torch file ({error}); it may be truncated") from None


def _state_and_metadata(payload: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(payload, dict) or payload.get("format") not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
        raise ModelError(f"{path} is not a visreps model file or training checkpoint (no 'format' key)")
    state = payload["state_dict"] if payload["format"] == MODEL_FORMAT else payload["model"]
    metadata = dict(payload.get("metadata") or {})
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ModelError(f"{path}: metadata lacks {missing}; cannot rebuild the network")
    return clean_state_dict(state), metadata


def refuse_mlflow_uri(uri_or_path: str | Path) -> None:
    """Raise ModelError naming ``visreps.tracking.load_model`` when given a ``runs:/`` or ``models:/`` URI."""
    text = str(uri_or_path)
    if text.startswith(MLFLOW_URI_SCHEMES):
        raise ModelError(f"{text!r} is an MLflow URI; visreps.models.load/load_file read local files only: use "
                         f"visreps.tracking.load_model({text!r}) (or visreps.tracking.resolve_model)")


def build_from_metadata(metadata: dict[str, Any]) -> nn.Module:
    """A fresh network of the architecture, class count and constructor options recorded in ``metadata``."""
    return create_model(metadata["architecture"], int(metadata["num_classes"]), **dict(metadata.get("model_kwargs") or {}))


def load_file(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network stored at ``path`` (a model file, a training checkpoint, or a folder with model.pt)."""
    refuse_mlflow_uri(path)
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    state, metadata = _state_and_metadata(read_weights_file(path), path)
    model = build_from_metadata(metadata)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelError(
            f"{path}: the weights do not fit {metadata['architecture']} with {metadata['num_classes']} classes "
            f"({str(error).splitlines()[0]})"
        ) from None
    model.to(device).eval()
    return LoadedModel(model, metadata, extraction_points(model))


def load(uri_or_path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a trained (or epoch-0) network from a local model file, training checkpoint or folder with model.pt.

    The network is rebuilt with ``create_model`` from the metadata and the state dict is loaded strictly;
    the returned model is in eval mode on ``device`` with its default extraction points listed.
    """
    refuse_mlflow_uri(uri_or_path)
    return load_file(Path(uri_or_path).expanduser(), device)
