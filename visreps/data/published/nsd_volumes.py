"""What NSD and NSD-synthetic share: the func1pt8mm volume layout, ROI masks, voxel validity, the per-subject
preprocessing cache and the assembly of ``Responses`` from preprocessed voxel arrays.

Subclasses say which files a subject needs (``_subject_files``), how many train/test stimuli it has
(``_split_counts``) and how its responses are computed (``_preprocess``, returning union-of-regions arrays).
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from visreps.data.base import Dataset, DatasetError, Responses
from visreps.data.cache import CacheEntry, PreprocessCache
from visreps.data.published.matfile import hdf5_dataset, open_hdf5
from visreps.data.published.nifti import NSD_REGIONS, RegionSpec, load_volume, parse_region, read_ctab, region_mask

NSD_SUBJECTS: tuple[str, ...] = tuple(f"subj{i:02d}" for i in range(1, 9))
#: published number of NSD scan sessions per subject
NSD_SESSIONS: dict[str, int] = dict(zip(NSD_SUBJECTS, (40, 40, 32, 30, 40, 32, 40, 30)))
HEMISPHERES = {"both": "", "lh": "lh.", "rh": "rh."}


def func_dir(subject: str) -> Path:
    return Path("nsddata/ppdata") / subject / "func1pt8mm"


def roi_file(subject: str, atlas: str, hemisphere: str = "both") -> Path:
    return func_dir(subject) / "roi" / f"{HEMISPHERES[hemisphere]}{atlas}.nii.gz"


def ctab_file(subject: str, atlas: str) -> Path:
    return Path("nsddata/freesurfer") / subject / "label" / f"{atlas}.mgz.ctab"


def brainmask_file(subject: str) -> Path:
    return func_dir(subject) / "brainmask.nii.gz"


def as_name_list(value: Any, what: str) -> list[str] | None:
    """None, a list of names, or one comma-separated string -> list of names (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    if isinstance(value, (int, np.integer)):
        return [str(value)]
    raise DatasetError(f"option {what}: expected a list or a comma-separated string, got {value!r}")


def normalise_subject(name: str) -> str:
    """'1', 1, 'subj1', 'subj01' -> 'subj01'."""
    text = str(name).strip().lower().removeprefix("subj")
    if text.isdigit() and 1 <= int(text) <= 8:
        return f"subj{int(text):02d}"
    raise DatasetError(f"unknown NSD subject {name!r}; subjects are {', '.join(NSD_SUBJECTS)}")


def require_files(root: Path, relative: Sequence[Path], dataset: str) -> None:
    """Raise a DatasetError naming the first file of ``relative`` missing under ``root``."""
    for rel in relative:
        if not (root / rel).is_file():
            raise DatasetError(
                f"{dataset}: missing file {rel.as_posix()} (expected at {root / rel}); "
                "check the dataset root or download the file"
            )


@dataclass(frozen=True)
class VolumeLayout:
    """Voxels of the requested regions of one subject: their union and each region's columns in it."""

    shape: tuple[int, int, int]
    union_xyz: np.ndarray  # (n_union, 3) X, Y, Z indices
    columns: dict[str, np.ndarray]  # region -> indices into union_xyz
    mask_counts: dict[str, int]  # voxels labelled in the atlas
    invalid_counts: dict[str, int]  # of those, outside the brain mask or invalid in a loaded session


def build_layout(root: Path, subject: str, specs: Sequence[RegionSpec], hemisphere: str,
                 validity_files: Sequence[Path], dataset: str) -> VolumeLayout:
    """Read the atlases and validity masks of ``subject`` and lay out the union of the regions' valid voxels."""
    atlases: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    shape: tuple[int, ...] | None = None
    for spec in specs:
        if spec.atlas not in atlases:
            path = root / roi_file(subject, spec.atlas, hemisphere)
            atlases[spec.atlas] = load_volume(path, f"{dataset} {subject} ROI atlas")
            if atlases[spec.atlas].ndim != 3:
                raise DatasetError(f"{dataset}: ROI atlas {path} is not a 3-D volume (shape {atlases[spec.atlas].shape})")
            if shape is not None and atlases[spec.atlas].shape != shape:
                raise DatasetError(f"{dataset}: ROI atlas {path} has shape {atlases[spec.atlas].shape}, other atlases {shape}")
            shape = atlases[spec.atlas].shape
        table_path = root / ctab_file(subject, spec.atlas)
        masks[spec.name] = region_mask(atlases[spec.atlas], read_ctab(table_path), spec, table_path)
    assert shape is not None
    valid = np.ones(shape, dtype=bool)
    for rel in validity_files:
        volume = load_volume(root / rel, f"{dataset} {subject} validity mask")
        if volume.shape[:3] != shape:
            raise DatasetError(f"{dataset}: mask {root / rel} has shape {volume.shape}, the ROI atlases {shape}")
        valid &= np.nan_to_num(volume.reshape(shape)) > 0
    union = np.zeros(shape, dtype=bool)
    for mask in masks.values():
        union |= mask & valid
    union_xyz = np.argwhere(union)
    index = np.full(shape, -1, dtype=np.int64)
    index[tuple(union_xyz.T)] = np.arange(len(union_xyz))
    columns = {name: index[mask & valid] for name, mask in masks.items()}
    return VolumeLayout(
        shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
        union_xyz=union_xyz,
        columns={name: np.sort(cols) for name, cols in columns.items()},
        mask_counts={name: int(mask.sum()) for name, mask in masks.items()},
        invalid_counts={name: int((mask & ~valid).sum()) for name, mask in masks.items()},
    )


def check_betas_header(path: Path, n_trials: int, shape_xyz: tuple[int, int, int], dataset: str) -> None:
    """Open a beta file and check its ``betas`` shape and dtype without reading data."""
    with open_hdf5(path, f"{dataset} betas") as handle:
        betas = hdf5_dataset(handle, "betas", f"{dataset} betas")
        expected = (n_trials, *shape_xyz[::-1])
        if betas.shape != expected or betas.dtype.kind not in "iu":
            raise DatasetError(
                f"{dataset}: {path} dataset 'betas' is {betas.dtype} {betas.shape}; expected int16 {expected} "
                "(trials, Z, Y, X) matching the ROI atlases"
            )


class _MemoryEntry:
    """Preprocessed arrays kept in memory when the cache is disabled (same interface as CacheEntry)."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]):
        self._arrays, self.meta = arrays, {**meta, "arrays": sorted(arrays)}

    def array(self, name: str, mmap: bool = False) -> np.ndarray:
        return self._arrays[name]


class NSDVolumeDataset(Dataset):
    """Base of the NSD-family readers (volumes at 1.8 mm, ROIs from the NSD atlases)."""

    kind = "neural"
    default_regions: tuple[str, ...] = tuple(NSD_REGIONS)

    def __init__(self, root: str | Path, subjects: Any = None, regions: Any = None,
                 hemisphere: str = "both", cache: bool = True):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"{self.name}: dataset root {self.root} is not a folder; point --root at the NSD download")
        if hemisphere not in HEMISPHERES:
            raise DatasetError(f"{self.name}: option hemisphere must be one of {', '.join(HEMISPHERES)}, got {hemisphere!r}")
        self.hemisphere = hemisphere
        names = as_name_list(regions, "regions") or list(self.default_regions)
        if len(set(names)) != len(names):
            raise DatasetError(f"{self.name}: option regions lists a region twice: {names}")
        self.region_specs = [parse_region(name) for name in names]
        requested = as_name_list(subjects, "subjects")
        self._subjects = [normalise_subject(s) for s in requested] if requested else self._present_subjects()
        if not self._subjects:
            raise DatasetError(
                f"{self.name}: no subject has beta files under {self.root}; expected e.g. "
                f"{self._example_betas().as_posix()}"
            )
        self._cache = PreprocessCache(self.name) if cache else None
        self._layouts: dict[str, VolumeLayout] = {}
        self._last: tuple[str, Any] | None = None

    # --- hooks -------------------------------------------------------------------------------------------
    @abstractmethod
    def _present_subjects(self) -> list[str]: ...

    @abstractmethod
    def _example_betas(self) -> Path: ...

    @abstractmethod
    def _subject_files(self, subject: str) -> list[Path]:
        """Relative paths of every file the responses of ``subject`` are computed from."""

    @abstractmethod
    def _validity_files(self, subject: str) -> list[Path]: ...

    @abstractmethod
    def _cache_options(self, subject: str) -> dict[str, Any]: ...

    @abstractmethod
    def _split_counts(self, subject: str) -> tuple[int, int, int]:
        """(n_train, n_test, max test repetitions) without reading betas."""

    @abstractmethod
    def _check_betas(self, subject: str) -> None:
        """Open every beta file of ``subject`` and check its header."""

    @abstractmethod
    def _preprocess(self, subject: str, layout: VolumeLayout) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Union arrays: train_ids, test_ids, train, test, test_repetitions, noise_ceiling, bad (units)."""

    # --- Dataset interface -------------------------------------------------------------------------------
    def subjects(self) -> list[str]:
        return list(self._subjects)

    def regions(self, subject: str | None = None) -> list[str]:
        return [spec.name for spec in self.region_specs]

    def atlas_files(self, subject: str) -> list[Path]:
        out: list[Path] = []
        for atlas in dict.fromkeys(spec.atlas for spec in self.region_specs):
            out += [roi_file(subject, atlas, self.hemisphere), ctab_file(subject, atlas)]
        return out

    def layout(self, subject: str) -> VolumeLayout:
        if subject not in self._layouts:
            self._layouts[subject] = build_layout(self.root, subject, self.region_specs, self.hemisphere,
                                                  self._validity_files(subject), self.name)
        return self._layouts[subject]

    def _entry(self, subject: str) -> CacheEntry | _MemoryEntry:
        if self._last is not None and self._last[0] == subject:
            return self._last[1]
        files = [self.root / rel for rel in self._subject_files(subject) + self._validity_files(subject)]
        options = {"regions": [(s.name, s.atlas, s.labels) for s in self.region_specs],
                   "hemisphere": self.hemisphere, **self._cache_options(subject)}
        key = self._cache.key(subject, files, options) if self._cache else ""
        entry = self._cache.load(key) if self._cache else None
        if entry is None:
            arrays, meta = self._pack(subject, *self._preprocess(subject, self.layout(subject)))
            entry = self._cache.save(key, arrays, meta) if self._cache else _MemoryEntry(arrays, meta)
        self._last = (subject, entry)
        return entry

    def _pack(self, subject: str, union: dict[str, np.ndarray], meta: dict[str, Any]):
        layout = self.layout(subject)
        bad = union.pop("bad")
        arrays = {"train_ids": union.pop("train_ids"), "test_ids": union.pop("test_ids")}
        regions: dict[str, Any] = {}
        for k, spec in enumerate(self.region_specs):
            cols = layout.columns[spec.name]
            keep, drop = cols[~bad[cols]], cols[bad[cols]]
            for name, values in union.items():
                arrays[f"r{k}_{name}"] = values[..., keep]
            arrays[f"r{k}_xyz"] = layout.union_xyz[keep]
            arrays[f"r{k}_dropped_xyz"] = layout.union_xyz[drop]
            regions[spec.name] = {"index": k, "n_labelled": layout.mask_counts[spec.name],
                                  "n_invalid": layout.invalid_counts[spec.name], "n_nonfinite": int(drop.size)}
        return arrays, {**meta, "subject": subject, "regions": regions}

    def responses(self, subject: str, region: str) -> Responses:
        self.check_subject_region(subject, region)
        entry = self._entry(subject)
        record = entry.meta["regions"][region]
        k = record["index"]
        spec = self.region_specs[k]
        train, test = entry.array(f"r{k}_train"), entry.array(f"r{k}_test")
        if train.shape[1] == 0:
            raise DatasetError(
                f"{self.name} {subject}: region {region!r} has no usable voxel: {record['n_labelled']} labelled "
                f"{'+'.join(spec.labels)} in {roi_file(subject, spec.atlas, self.hemisphere).as_posix()}, "
                f"{record['n_invalid']} outside the valid masks, {record['n_nonfinite']} constant/non-finite"
            )
        if record["n_nonfinite"]:
            warnings.warn(
                f"{self.name} {subject} {region}: dropped {record['n_nonfinite']} voxel(s) that were constant or "
                "non-finite within a session (listed in Responses.info['dropped_units'])", stacklevel=2,
            )
        info = {
            "dataset": self.name,
            "voxel_xyz": entry.array(f"r{k}_xyz"),
            "atlas": spec.atlas,
            "labels": list(spec.labels),
            "hemisphere": self.hemisphere,
            "dropped_units": entry.array(f"r{k}_dropped_xyz").tolist(),
            "dropped_reason": "constant or non-finite within a session (voxel X, Y, Z indices)",
            "n_units_original": int(train.shape[1] + record["n_nonfinite"]),
            "excluded_outside_valid_mask": record["n_invalid"],
            **{key: value for key, value in entry.meta.items() if key not in ("regions", "arrays", "created")},
        }
        return Responses(
            subject=subject,
            region=region,
            train_ids=entry.array("train_ids"),
            test_ids=entry.array("test_ids"),
            train=train,
            test=test,
            train_repetitions=None,
            test_repetitions=entry.array(f"r{k}_test_repetitions"),
            noise_ceiling=None if entry.meta.get("noise_ceiling_definition") == "none"
            else entry.array(f"r{k}_noise_ceiling"),
            info=info,
        )

    def summary(self, deep: bool = False) -> dict[str, Any]:
        """Subjects, regions with voxel counts, stimuli; checks every file's header (``deep``: preprocesses all)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "test_only": self.test_only,
                               "root": str(self.root), "n_stimuli": len(self.stimulus_ids()), "subjects": {},
                               "warnings": []}
        for subject in self.subjects():
            self._check_betas(subject)
            layout = self.layout(subject)
            n_train, n_test, n_reps = self._split_counts(subject)
            out["subjects"][subject] = {}
            for region in self.regions(subject):
                if deep:
                    try:
                        with warnings.catch_warnings(record=True) as caught:
                            warnings.simplefilter("always")
                            n_units = self.responses(subject, region).n_units
                        out["warnings"].extend(str(w.message) for w in caught)
                    except DatasetError as error:
                        n_units = 0
                        out["warnings"].append(str(error))
                else:
                    n_units = int(layout.columns[region].size)
                    if n_units == 0:
                        out["warnings"].append(f"{subject} {region}: no valid voxel in the ROI mask")
                out["subjects"][subject][region] = {
                    "n_units": n_units, "n_train": n_train, "n_test": n_test, "n_repetitions": n_reps,
                }
        return out
