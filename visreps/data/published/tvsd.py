"""The THINGS Ventral Stream Spiking Dataset (Papale et al. 2025): macaques F and N, 1,024 Utah-array electrodes.

Root = the folder holding ``monkeyF/`` and ``monkeyN/``; per monkey ``THINGS_normMUA.mat`` (MATLAB v7.3:
``train_MUA`` electrodes × 22,248, ``test_MUA`` electrodes × 100, ``test_MUA_reps`` electrodes × 100 × 30,
``SNR``, ``reliab``, ``oracle``) and ``_logs/things_imgs.mat`` (``train_imgs`` / ``test_imgs``: THINGS paths,
as a struct with a ``things_path`` field or as a cell array of strings). Arrays are oriented by the known sizes
(the image counts of things_imgs.mat), whatever the storage order. Stimulus id = THINGS file stem
(``aardvark_01b``); images are read from ``<things_root>/object_images/<things_path>``.

Electrode -> area (0-based, inclusive) by default follows the dataset's own ``_code/norm_MUA.m``:
F: V1 0–511, IT 512–831, V4 832–1023; N: V1 0–511, V4 512–767, IT 768–1023. ``areas="study"`` gives the
mapping of the original study code (F: V4 512–831, IT 832–1023), or pass explicit ranges.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image

from visreps.data.base import Dataset, DatasetError, Responses
from visreps.data.cache import PreprocessCache
from visreps.data.images import check_image_files, load_rgb
from visreps.data.published.matfile import hdf5_dataset, matlab_shape, open_hdf5, oriented, read_mat_strings
from visreps.data.published.preprocess import ceiling_from_repetitions

MONKEYS = ("monkeyF", "monkeyN")
AREA_ORDER = ("V1", "V4", "IT")
AREA_MAPS: dict[str, dict[str, dict[str, tuple[int, int]]]] = {
    "dataset": {"monkeyF": {"V1": (0, 511), "IT": (512, 831), "V4": (832, 1023)},
                "monkeyN": {"V1": (0, 511), "V4": (512, 767), "IT": (768, 1023)}},
    "study": {"monkeyF": {"V1": (0, 511), "V4": (512, 831), "IT": (832, 1023)},
              "monkeyN": {"V1": (0, 511), "V4": (512, 767), "IT": (768, 1023)}},
}
QUALITY_VARIABLES = ("SNR", "reliab", "oracle")


def mua_file(monkey: str) -> Path:
    return Path(monkey) / "THINGS_normMUA.mat"


def images_file(monkey: str) -> Path:
    return Path(monkey) / "_logs" / "things_imgs.mat"


def normalise_monkey(name: Any) -> str:
    text = str(name).strip()
    candidate = text if text.startswith("monkey") else f"monkey{text.upper()}"
    if candidate not in MONKEYS:
        raise DatasetError(f"tvsd: unknown monkey {name!r}; subjects are {', '.join(MONKEYS)}")
    return candidate


def parse_area_map(value: Any) -> dict[str, dict[str, tuple[int, int]]]:
    """A preset name ('dataset', 'study'), or {monkey: {area: 'first-last' | [first, last]}} (inclusive, 0-based).

    A string form ``monkeyF:V1=0-511,V4=512-831;monkeyN:...`` is accepted for command-line options.
    """
    if value is None:
        value = "dataset"
    if isinstance(value, str) and value in AREA_MAPS:
        return AREA_MAPS[value]
    if isinstance(value, str):
        parsed: dict[str, Any] = {}
        for block in filter(None, (b.strip() for b in value.split(";"))):
            monkey, _, ranges = block.partition(":")
            parsed[monkey] = dict(item.split("=", 1) for item in ranges.split(",") if "=" in item)
        value = parsed
    if not isinstance(value, dict) or not value:
        raise DatasetError(f"tvsd: option areas must be 'dataset', 'study' or {{monkey: {{area: 'first-last'}}}}, got {value!r}")
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for monkey, areas in value.items():
        ranges: dict[str, tuple[int, int]] = {}
        for area, span in dict(areas).items():
            try:
                first, last = (int(v) for v in (span.split("-") if isinstance(span, str) else span))
            except (TypeError, ValueError):
                raise DatasetError(f"tvsd: area {area!r} of {monkey}: range {span!r} is not 'first-last'") from None
            if not 0 <= first <= last:
                raise DatasetError(f"tvsd: area {area!r} of {monkey}: bad range {first}-{last}")
            ranges[str(area)] = (first, last)
        spans = sorted(ranges.values())
        if any(a[1] >= b[0] for a, b in zip(spans, spans[1:])):
            raise DatasetError(f"tvsd: the electrode ranges of {monkey} overlap: {ranges}")
        out[normalise_monkey(monkey)] = ranges
    return out


#: the axes of each response variable of THINGS_normMUA.mat (MATLAB's order) and the image list of its images
MUA_AXES = {"train_MUA": (("electrodes", "images"), "train_imgs"),
            "test_MUA": (("electrodes", "images"), "test_imgs"),
            "test_MUA_reps": (("electrodes", "images", "repetitions"), "test_imgs")}


def _mua(handle: Any, monkey: str, name: str, expected: tuple[int | None, ...]) -> np.ndarray:
    """Variable ``name`` of the monkey's THINGS_normMUA.mat with its axes as ``expected`` (electrodes, images[,
    repetitions]; None = any); a DatasetError naming both files when its image count is not things_imgs.mat's."""
    what = f"tvsd {mua_file(monkey).as_posix()}"
    node = hdf5_dataset(handle, name, what)
    with contextlib.suppress(DatasetError):  # not as expected: say how, below
        return oriented(node[()], expected, f"{what} {name}")
    axes, image_list = MUA_AXES[name]
    shape, n_images = matlab_shape(node), expected[1]
    size = f"{' × '.join(map(str, shape))} ({' × '.join(axes[:len(shape)])})"
    if len(shape) == len(axes) and shape[1] != n_images:
        raise DatasetError(
            f"tvsd: {mua_file(monkey).as_posix()} {name} is {size}: {shape[1]} images, but "
            f"{images_file(monkey).as_posix()} lists {n_images} images in {image_list}; the two files are not from "
            f"the same download (one is incomplete or from another release): download both files of {monkey} again")
    wanted = " × ".join("any" if n is None else str(n) for n in expected)
    raise DatasetError(
        f"tvsd: {mua_file(monkey).as_posix()} {name} is {size}, expected {wanted} ({' × '.join(axes)}: the "
        f"electrodes of train_MUA, the images of {image_list} in {images_file(monkey).as_posix()}); the file is "
        f"malformed: download {mua_file(monkey).as_posix()} again")


def _stem(things_path: str) -> str:
    return PureWindowsPath(things_path.strip()).stem


class TVSDDataset(Dataset):
    """TVSD multi-unit activity per monkey and area (V1, V4, IT).

    Options: ``subjects`` (monkeyF/monkeyN or F/N; default those present), ``areas`` (see module doc),
    ``things_root`` (folder holding ``object_images/``; default ``<root>/object_images`` or
    ``<root>/THINGS/object_images`` when present), ``cache``.
    """

    name = "tvsd"
    kind = "neural"

    def __init__(self, root: str | Path, subjects: Any = None, areas: Any = None,
                 things_root: str | Path | None = None, cache: bool = True):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"tvsd: dataset root {self.root} is not a folder; point --root at the TVSD download")
        if subjects is None:
            self._subjects = [m for m in MONKEYS if (self.root / m).is_dir()]
            if not self._subjects:
                raise DatasetError(f"tvsd: missing file {mua_file('monkeyF').as_posix()} "
                                   f"(expected at {self.root / mua_file('monkeyF')}); no monkey folder under the root")
        else:
            names = [subjects] if isinstance(subjects, str) and "," not in subjects else subjects
            if isinstance(names, str):
                names = names.split(",")
            self._subjects = [normalise_monkey(s) for s in names]
        self.area_map = parse_area_map(areas)
        for monkey in self._subjects:
            if monkey not in self.area_map:
                raise DatasetError(f"tvsd: option areas gives no electrode ranges for {monkey}")
            for rel in (mua_file(monkey), images_file(monkey)):
                if not (self.root / rel).is_file():
                    raise DatasetError(f"tvsd: missing file {rel.as_posix()} (expected at {self.root / rel})")
        self.images_dir = self._find_images_dir(things_root)
        self._paths = {m: self._read_image_order(m) for m in self._subjects}
        self._path_of: dict[str, str] = {}
        for train, test in self._paths.values():
            self._path_of.update({_stem(p): p for p in train + test})
        if self.images_dir is not None:
            self._check_images()
        self._cache = PreprocessCache(self.name) if cache else None
        self._loaded: dict[str, dict[str, Any]] = {}

    # --- files ----------------------------------------------------------------------------------------------
    def _find_images_dir(self, things_root: str | Path | None) -> Path | None:
        if things_root is not None:
            base = Path(things_root).expanduser()
            if (base / "object_images").is_dir():
                return base / "object_images"
            if base.is_dir():
                return base
            raise DatasetError(f"tvsd: option things_root {base} is not a folder; point it at the folder holding object_images/")
        for candidate in (self.root / "object_images", self.root / "THINGS" / "object_images"):
            if candidate.is_dir():
                return candidate
        return None

    def _read_image_order(self, monkey: str) -> tuple[list[str], list[str]]:
        path = self.root / images_file(monkey)
        train = read_mat_strings(path, "train_imgs", "tvsd image order", fields=("things_path",))
        test = read_mat_strings(path, "test_imgs", "tvsd image order", fields=("things_path",))
        for split, paths in (("train_imgs", train), ("test_imgs", test)):
            stems = [_stem(p) for p in paths]
            if not paths or any(not s for s in stems):
                raise DatasetError(f"tvsd: {images_file(monkey).as_posix()} {split} holds empty image paths")
            if len(set(stems)) != len(stems):
                duplicate = next(s for s in stems if stems.count(s) > 1)
                raise DatasetError(f"tvsd: {images_file(monkey).as_posix()} {split} lists image {duplicate!r} twice")
        overlap = {_stem(p) for p in train} & {_stem(p) for p in test}
        if overlap:
            raise DatasetError(f"tvsd: {images_file(monkey).as_posix()}: {sorted(overlap)[0]!r} is both a train and a test image")
        return train, test

    def _check_images(self) -> None:
        assert self.images_dir is not None
        present: set[str] = set()
        for folder in {str(PureWindowsPath(p).parent) for p in self._path_of.values()}:
            directory = self.images_dir / PureWindowsPath(folder).as_posix()
            if directory.is_dir():
                present.update(f"{folder}/{e.name}" for e in os.scandir(directory))
        missing = [p for p in self._path_of.values()
                   if f"{PureWindowsPath(p).parent}/{PureWindowsPath(p).name}" not in present]
        if missing:
            raise DatasetError(
                f"tvsd: {len(missing)} of {len(self._path_of)} stimulus images are not under {self.images_dir}, "
                f"e.g. {PureWindowsPath(missing[0]).as_posix()}; point things_root at the THINGS image folder"
            )
        check_image_files([self.images_dir / PureWindowsPath(p).as_posix() for p in self._path_of.values()],
                          f"tvsd: the THINGS images under {self.images_dir}")

    # --- Dataset interface ----------------------------------------------------------------------------------
    def subjects(self) -> list[str]:
        return list(self._subjects)

    def regions(self, subject: str | None = None) -> list[str]:
        monkeys = [subject] if subject is not None else self._subjects
        names = {area for m in monkeys if m in self.area_map for area in self.area_map[m]}
        return sorted(names, key=lambda a: (AREA_ORDER.index(a) if a in AREA_ORDER else len(AREA_ORDER), a))

    def stimulus_ids(self) -> list[str]:
        return list(dict.fromkeys(_stem(p) for m in self._subjects for p in self._paths[m][0] + self._paths[m][1]))

    def load_image(self, image_id: str) -> Image.Image:
        if image_id not in self._path_of:
            raise DatasetError(f"tvsd: {image_id!r} is not a stimulus of this dataset")
        if self.images_dir is None:
            raise DatasetError("tvsd: THINGS images are not configured; pass the option things_root=<folder holding object_images/>")
        return load_rgb(self.images_dir / PureWindowsPath(self._path_of[image_id]).as_posix())

    def responses(self, subject: str, region: str) -> Responses:
        self.check_subject_region(subject, region)
        data = self._monkey(subject)
        record = data["meta"]["regions"][region]
        k = record["index"]
        if data["array"](f"r{k}_train").shape[1] == 0:
            first, last = self.area_map[subject][region]
            raise DatasetError(f"tvsd {subject}: area {region} (electrodes {first}-{last}) has no usable electrode: "
                               f"every one has non-finite or constant responses in {mua_file(subject).as_posix()}; "
                               "download that file again, or leave the area out (regions=...)")
        if record["n_dropped"]:
            warnings.warn(f"tvsd {subject} {region}: dropped {record['n_dropped']} electrode(s) with non-finite or "
                          "constant responses (listed in Responses.info['dropped_units'])", stacklevel=2)
        info = {
            "dataset": self.name,
            "electrodes": data["array"](f"r{k}_electrodes"),
            "electrode_range": list(self.area_map[subject][region]),
            "dropped_units": data["array"](f"r{k}_dropped").tolist(),
            "dropped_reason": "non-finite or constant responses (electrode indices)",
            "n_units_original": int(self.area_map[subject][region][1] - self.area_map[subject][region][0] + 1),
            "noise_ceiling_definition": "ncsnr from test_MUA_reps (pooled within-image variance); "
                                        "ncsnr^2 / (ncsnr^2 + mean 1/n_repetitions)",
            **{name: data["array"](f"r{k}_{name}") for name in data["meta"]["quality"]},
        }
        return Responses(
            subject=subject, region=region,
            train_ids=data["array"]("train_ids"), test_ids=data["array"]("test_ids"),
            train=data["array"](f"r{k}_train"), test=data["array"](f"r{k}_test"),
            test_repetitions=data["array"](f"r{k}_test_repetitions"),
            noise_ceiling=data["array"](f"r{k}_noise_ceiling"), info=info,
        )

    def summary(self, deep: bool = False) -> dict[str, Any]:
        out = super().summary()
        out.update(root=str(self.root), images_dir=None if self.images_dir is None else str(self.images_dir),
                   warnings=[] if self.images_dir is not None else
                   ["THINGS images not configured (option things_root): responses work, images cannot be loaded"])
        return out

    # --- preprocessing --------------------------------------------------------------------------------------
    def _monkey(self, monkey: str) -> dict[str, Any]:
        if monkey in self._loaded:
            return self._loaded[monkey]
        files = [self.root / mua_file(monkey), self.root / images_file(monkey)]
        options = {"areas": self.area_map[monkey]}
        entry = None
        if self._cache is not None:
            key = self._cache.key(monkey, files, options)
            entry = self._cache.load(key)
            if entry is None:
                entry = self._cache.save(key, *self._preprocess(monkey))
        if entry is not None:
            self._loaded[monkey] = {"meta": entry.meta, "array": entry.array}
        else:
            arrays, meta = self._preprocess(monkey)
            self._loaded[monkey] = {"meta": meta, "array": arrays.__getitem__}
        return self._loaded[monkey]

    def _preprocess(self, monkey: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        train_paths, test_paths = self._paths[monkey]
        n_train, n_test = len(train_paths), len(test_paths)
        path = self.root / mua_file(monkey)
        what = f"tvsd {mua_file(monkey).as_posix()}"
        with open_hdf5(path, what) as handle:
            train = _mua(handle, monkey, "train_MUA", (None, n_train))
            n_electrodes = train.shape[0]
            test = _mua(handle, monkey, "test_MUA", (n_electrodes, n_test))
            reps = _mua(handle, monkey, "test_MUA_reps", (n_electrodes, n_test, None))
            quality = {}
            for name in QUALITY_VARIABLES:
                if name in handle:
                    values = np.asarray(handle[name][()], dtype=np.float64)
                    values = oriented(values.reshape(values.shape[0], -1) if values.ndim == 1 else values,
                                      (n_electrodes, None), f"{what} {name}")
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        quality[name] = np.nanmean(values, axis=1).astype(np.float32)
        train = np.asarray(train, dtype=np.float32)
        test = np.asarray(test, dtype=np.float32)
        reps = np.asarray(reps, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            bad = (~np.isfinite(train).all(axis=1) | ~np.isfinite(test).all(axis=1)
                   | (np.nanstd(train, axis=1) == 0))
        arrays: dict[str, np.ndarray] = {
            "train_ids": np.array([_stem(p) for p in train_paths], dtype=str),
            "test_ids": np.array([_stem(p) for p in test_paths], dtype=str),
        }
        regions: dict[str, Any] = {}
        for k, area in enumerate(self.regions(monkey)):
            first, last = self.area_map[monkey][area]
            if last >= n_electrodes:
                raise DatasetError(f"tvsd: area {area} of {monkey} ends at electrode {last}, "
                                   f"but {mua_file(monkey).as_posix()} has {n_electrodes} electrodes")
            electrodes = np.arange(first, last + 1)
            keep, drop = electrodes[~bad[electrodes]], electrodes[bad[electrodes]]
            arrays[f"r{k}_train"] = np.ascontiguousarray(train[keep].T)
            arrays[f"r{k}_test"] = np.ascontiguousarray(test[keep].T)
            arrays[f"r{k}_test_repetitions"] = np.ascontiguousarray(reps[keep].transpose(1, 2, 0))
            arrays[f"r{k}_noise_ceiling"] = (ceiling_from_repetitions(arrays[f"r{k}_test_repetitions"]) if keep.size
                                             else np.zeros(0, dtype=np.float32))  # responses() names the empty area
            arrays[f"r{k}_electrodes"], arrays[f"r{k}_dropped"] = keep, drop
            for name, values in quality.items():
                arrays[f"r{k}_{name}"] = values[keep]
            regions[area] = {"index": k, "n_dropped": int(drop.size)}
        return arrays, {"monkey": monkey, "regions": regions, "quality": sorted(quality),
                        "n_electrodes": n_electrodes}
