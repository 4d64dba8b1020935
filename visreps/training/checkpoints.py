"""Training checkpoints: everything needed to resume a run exactly, as plain state dicts.

A checkpoint ``epoch_NNN.pt`` (NNN = epochs completed; 000 is the untrained network) holds
``{"format": "visreps-checkpoint", "format_version", "epoch", "model", "optimizer", "scheduler", "scaler",
"rng", "config", "config_hash", "metadata", "history"}`` — tensors and plain values only, so it is read back with
``torch.load(weights_only=True)`` and never depends on class definitions. Files are written atomically
(temporary file + rename). A run's local folder keeps ``epoch_000.pt`` and the newest checkpoint only.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visreps.models.files import CHECKPOINT_FORMAT, atomic_torch_save, read_weights_file
from visreps.models.registry import ModelError
from visreps.training.errors import CheckpointError

CHECKPOINT_PATTERN = re.compile(r"^epoch_(\d{3,})\.pt$")
#: metadata entries that must agree between a checkpoint and the run resuming from it
COMPATIBILITY_KEYS = ("architecture", "num_classes", "image_size", "labels_fingerprint")


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the checkpoints in ``folder``, oldest first (temporary files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint with the most completed epochs in ``folder``, or None."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU and CUDA, NumPy legacy, Python) as tensors and plain values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo ``rng_state()``: set every global generator back."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, epoch: int, model_state: dict, optimizer_state: dict,
                    scheduler_state: dict, scaler_state: dict | None, config: dict[str, Any], config_hash: str,
                    metadata: dict[str, Any], history: list[dict[str, float]]) -> Path:
    """Write one checkpoint atomically (tensors moved to CPU)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": 1,
        "epoch": int(epoch),
        "model": {key: value.detach().cpu() for key, value in model_state.items()},
        "optimizer": optimizer_state,
        "scheduler": scheduler_state,
        "scaler": scaler_state or {},
        "rng": rng_state(),
        "config": config,
        "config_hash": config_hash,
        "metadata": {**metadata, "epoch": int(epoch)},
        "history": list(history),
    }
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; CheckpointError naming the file when it is not one."""
    try:
        payload = read_weights_file(path)
    except ModelError as error:
        raise CheckpointError(str(error)) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a visreps training checkpoint (format {CHECKPOINT_FORMAT!r})")
    return payload


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def check_compatible(payload: dict[str, Any], path: str | Path, config: dict[str, Any], config_hash: str,
                     metadata: dict[str, Any]) -> None:
    """Raise CheckpointError unless ``payload`` was written by a run of the same configuration and labels."""
    differences = [
        f"{key}: checkpoint {payload['metadata'].get(key)!r} vs now {metadata.get(key)!r}"
        for key in COMPATIBILITY_KEYS
        if payload.get("metadata", {}).get(key) != metadata.get(key)
    ]
    if payload.get("config_hash") != config_hash:
        before, now = _flat(payload.get("config", {})), _flat(config)
        changed = sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key))
        differences.append(f"config hash {payload.get('config_hash')} vs {config_hash} (keys differing: "
                           f"{', '.join(changed) or 'none visible'})")
    if differences:
        raise CheckpointError(
            f"cannot resume from {path}: it belongs to another configuration ({'; '.join(differences)}). "
            "Delete the file, point resume at a matching checkpoint, or train with force=true"
        )


def export_model_file(checkpoint_path: str | Path, model_path: str | Path) -> Path:
    """Write the network of a checkpoint as a model file (weights + metadata, no optimiser state)."""
    from visreps.models.files import MODEL_FORMAT

    payload = load_checkpoint(checkpoint_path)
    model_file = {"format": MODEL_FORMAT, "format_version": 1, "state_dict": payload["model"],
                  "metadata": dict(payload["metadata"])}
    return atomic_torch_save(model_file, model_path)
