"""Stream a stimulus set through a network into an on-disk feature cache: one memory-mapped array per point.

``extract_features`` reads every requested point in one forward pass per batch, applies the seeded sparse
random projection of each point on the fly (k = 4,096, docs/method.md §3; ``projection_dim=None`` keeps the exact
activations), averages the images of a stimulus as they stream past (THINGS concepts), and writes each finished
stimulus row into ``<cache_root>/<key>/<point>.npy`` (float32, stimuli × features). Memory is one batch of
activations plus the rows still being averaged — never all points at full size.

The key hashes everything the numbers depend on (``FeatureSpec``): the weights fingerprint, the points and
token rule, the stimulus set's fingerprint, the image transform, the projection (dimension, seed) and the
autocast option. A complete cache with that key is re-used; an interrupted extraction resumes at the first
stimulus it had not finished (``manifest.json`` records the finished prefix after every batch, written after the
arrays are flushed, and rows are written whole, so re-writing one is harmless); it re-reads from the start of
the interrupted batch with the recorded batch size, so the resumed numbers are bitwise those of an uninterrupted
run. A lock file keeps two processes
from filling one cache at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from visreps.activations.reader import ActivationReader, TokenRule
from visreps.activations.stimuli import StimulusSet
from visreps.alignment.projection import DEFAULT_COMPONENTS
from visreps.alignment.selection import projection_for

Autocast = Literal["none", "bf16", "fp16"]
MANIFEST = "manifest.json"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class FeatureSpec:
    """What a feature cache holds; ``key`` (16 hex) is its folder name."""

    weights_fingerprint: str
    points: tuple[str, ...]
    stimuli_fingerprint: str
    transform: str
    token: str = "flatten"
    projection_dim: int | None = DEFAULT_COMPONENTS
    projection_seed: int = 0
    autocast: str = "none"

    @property
    def key(self) -> str:
        text = json.dumps({"format": CACHE_FORMAT, **asdict(self)}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class CachedFeatures(Mapping):
    """A complete feature cache: point -> read-only memmap (stimuli × features, float32), rows = ``ids``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        self.ids: list[str] = list(self.manifest["ids"])
        self.shapes = {point: (len(self.ids), int(dim)) for point, dim in self.manifest["dims"].items()}
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def key(self) -> str:
        return self.folder.name

    @property
    def input_dims(self) -> dict[str, int]:
        """Activation width of every point before projection."""
        return {point: int(width) for point, width in self.manifest["input_dims"].items()}

    def __getitem__(self, point: str) -> np.ndarray:
        if point not in self.shapes:
            raise KeyError(f"point {point!r} is not in feature cache {self.folder}; it holds {', '.join(self.shapes)}")
        if point not in self._arrays:
            self._arrays[point] = np.load(self.folder / f"{_file_name(point)}.npy", mmap_mode="r")
        return self._arrays[point]

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Row positions of stimuli ``ids`` (int64), KeyError naming the first unknown one."""
        position = {stimulus: index for index, stimulus in enumerate(self.ids)}
        try:
            return np.array([position[str(stimulus)] for stimulus in ids], dtype=np.int64)
        except KeyError as error:
            raise KeyError(f"stimulus {error.args[0]!r} is not in feature cache {self.folder}") from None


class FeatureRows(Mapping):
    """Rows ``rows`` of a feature cache, read one point at a time: point -> (len(rows), d) float32 array, so
    a consumer holds one point in memory, never all of them."""

    def __init__(self, features: "CachedFeatures", rows: np.ndarray, points: Sequence[str] | None = None) -> None:
        self.features, self.rows = features, np.asarray(rows, dtype=np.int64)
        self.points = list(points or features)
        self.shapes = {point: (int(self.rows.size), features.shapes[point][1]) for point in self.points}

    def __getitem__(self, point: str) -> np.ndarray:
        if point not in self.shapes:
            raise KeyError(point)
        return np.ascontiguousarray(self.features[point][self.rows])

    def __iter__(self):
        return iter(self.points)

    def __len__(self) -> int:
        return len(self.points)


def _file_name(point: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in point)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _autocast(device: torch.device, autocast: Autocast):
    if autocast == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if autocast == "bf16" else torch.float16)


class _RowAverager:
    """Sums the images of each stimulus as they stream past and hands back finished rows (means), in order."""

    def __init__(self, counts: np.ndarray, start_row: int) -> None:
        self.counts = counts
        self.next_row = start_row  # first row not yet handed back
        self.sums: dict[str, dict[int, np.ndarray]] = {}
        self.seen: dict[int, int] = {}

    def add(self, rows: np.ndarray, values: dict[str, np.ndarray]) -> tuple[list[int], dict[str, np.ndarray]]:
        """Add a batch (rows before ``next_row``, already written, are skipped); returns (finished rows,
        point -> their means (len(finished rows), d))."""
        keep = rows >= self.next_row
        rows, values = rows[keep], {point: batch[keep] for point, batch in values.items()}
        boundaries = np.flatnonzero(np.diff(rows)) + 1
        for segment in np.split(np.arange(rows.size), boundaries):
            row = int(rows[segment[0]])
            self.seen[row] = self.seen.get(row, 0) + segment.size
            for point, batch in values.items():
                part = batch[segment].astype(np.float64).sum(axis=0)
                sums = self.sums.setdefault(point, {})
                sums[row] = sums[row] + part if row in sums else part
        finished = []
        while self.next_row in self.seen and self.seen[self.next_row] == self.counts[self.next_row]:
            finished.append(self.next_row)
            del self.seen[self.next_row]
            self.next_row += 1
        means = {point: np.stack([sums.pop(row) / self.counts[row] for row in finished]).astype(np.float32)
                 if finished else None for point, sums in self.sums.items()}
        return finished, means


def extract_features(model: nn.Module, stimuli: StimulusSet, transform: Callable, points: Sequence[str], *,
                     cache_root: str | Path, weights_fingerprint: str, transform_description: str | None = None,
                     token: TokenRule = "flatten", projection_dim: int | None = DEFAULT_COMPONENTS,
                     projection_seed: int = 0, autocast: Autocast = "none", batch_size: int = 64,
                     num_workers: int = 0, device: str | torch.device = "cpu", progress: bool = False
                     ) -> CachedFeatures:
    """Features of ``stimuli`` at ``points`` of ``model``, from the cache or extracted into it (module docstring).

    Returns the complete cache: point -> (len(stimuli), min(D, projection_dim)) float32 memmap, rows in
    ``stimuli.ids`` order. The model is moved to ``device`` and must already be in the mode to read (eval).
    """
    spec = FeatureSpec(weights_fingerprint, tuple(points), stimuli.fingerprint,
                       transform_description if transform_description is not None else str(transform),
                       token, projection_dim, projection_seed, autocast)
    folder = Path(cache_root) / spec.key
    with _locked(folder):
        manifest_path = folder / MANIFEST
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        if manifest is None or not manifest.get("complete"):
            _fill(model, stimuli, transform, spec, folder, manifest, batch_size=batch_size,
                  num_workers=num_workers, device=torch.device(device), progress=progress)
    return CachedFeatures(folder)


def _fill(model: nn.Module, stimuli: StimulusSet, transform: Callable, spec: FeatureSpec, folder: Path,
          manifest: dict[str, Any] | None, *, batch_size: int, num_workers: int, device: torch.device,
          progress: bool) -> None:
    model.to(device)
    start_row = int(manifest["rows_done"]) if manifest else 0
    batch_size = int(manifest["batch_size"]) if manifest else batch_size  # the same batches: bitwise the same numbers
    counts = stimuli.image_counts
    start_image = int(counts[:start_row].sum()) // batch_size * batch_size
    averager = _RowAverager(counts, start_row)
    projections: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    bar = tqdm(total=stimuli.n_images, initial=start_image, unit="image",
               desc=f"activations {spec.key[:8]}", disable=not progress)
    with ActivationReader(model, list(spec.points), spec.token) as reader:
        for images, rows in stimuli.batches(transform, start_image=start_image, batch_size=batch_size,
                                            num_workers=num_workers):
            with _autocast(device, spec.autocast):  # type: ignore[arg-type]
                outputs = reader(images.to(device))
            if not projections:
                projections = {point: projection_for(int(value.shape[1]), spec.projection_dim, spec.projection_seed)
                               for point, value in outputs.items()}
                manifest = manifest or _new_manifest(folder, stimuli, spec, outputs, projections, batch_size)
                arrays = {point: np.load(folder / f"{_file_name(point)}.npy", mmap_mode="r+") for point in outputs}
            values = {point: projections[point].project(value.float(), device=device, name=f"point {point!r}")
                      .cpu().numpy() for point, value in outputs.items()}
            finished, means = averager.add(rows, values)
            if finished:
                for point, array in arrays.items():
                    array[finished[0]:finished[-1] + 1] = means[point]
                    array.flush()
                manifest["rows_done"] = finished[-1] + 1
                _write_json(folder / MANIFEST, manifest)
            bar.update(images.shape[0])
    bar.close()
    if manifest is None or manifest["rows_done"] != len(stimuli):
        raise RuntimeError(f"feature extraction into {folder} stopped at row "
                           f"{None if manifest is None else manifest['rows_done']} of {len(stimuli)}")
    manifest["complete"] = True
    _write_json(folder / MANIFEST, manifest)


def _new_manifest(folder: Path, stimuli: StimulusSet, spec: FeatureSpec, outputs: dict[str, torch.Tensor],
                  projections: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """Create the (zero-filled) arrays and the manifest of an empty cache."""
    dims = {point: int(projection.output_dim) for point, projection in projections.items()}
    for point, dim in dims.items():
        np.lib.format.open_memmap(folder / f"{_file_name(point)}.npy", mode="w+", dtype=np.float32,
                                  shape=(len(stimuli), dim)).flush()
    manifest = {"spec": asdict(spec), "ids": list(stimuli.ids), "dims": dims,
                "input_dims": {point: int(value.shape[1]) for point, value in outputs.items()},
                "projections": {point: projection.describe() for point, projection in projections.items()},
                "batch_size": batch_size, "rows_done": 0, "complete": False}
    _write_json(folder / MANIFEST, manifest)
    return manifest
