"""Files of the generic visreps dataset format (docs/dataset_format.md): names, manifest, tables, arrays.

Shared by the reader (``visreps.data.generic.reader``) and the writers (``visreps.data.generic.writer``), so
both apply the same checks. Every failure is one DatasetError naming the file and the fix.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from visreps.data.base import DatasetError

FORMAT_NAME = "visreps-dataset"
FORMAT_VERSION = 1
MANIFEST_NAME = "visreps_dataset.yaml"
DEFAULT_RESPONSES = "responses/{subject}/{region}.npz"
REQUIRED_MANIFEST_KEYS = ("format", "format_version", "name", "kind", "stimuli", "subjects", "regions")
OPTIONAL_MANIFEST_KEYS = ("description", "responses", "test_only", "behaviour", "selection_fraction",
                          "split_seed", "metadata")
RESPONSE_ARRAYS = ("train_ids", "test_ids", "train", "test")
OPTIONAL_RESPONSE_ARRAYS = ("train_repetitions", "test_repetitions", "noise_ceiling")
INFO_PREFIX = "info_"
BEHAVIOUR_ARRAYS = ("concepts", "embedding", "selection_concepts", "evaluation_concepts")
FORMAT_DOC = "docs/dataset_format.md"


def fail(message: str) -> DatasetError:
    """A DatasetError whose message ends with where the format is documented."""
    return DatasetError(f"{message} (format: {FORMAT_DOC})")


# ---------------------------------------------------------------- manifest and stimulus table


def read_manifest(root: Path) -> dict[str, Any]:
    """Read and check ``root/visreps_dataset.yaml``; return it with defaults filled in."""
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise fail(f"dataset folder {root} does not exist; give the folder that holds {MANIFEST_NAME}")
    if not path.is_file():
        raise fail(f"{path} is missing; write it with visreps.data.generic.writer.write_manifest")
    try:
        manifest = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise fail(f"{path} is not valid YAML: {error}") from None
    if not isinstance(manifest, dict):
        raise fail(f"{path} must hold a mapping of keys, not {type(manifest).__name__}")
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise fail(f"{path} lacks the keys {', '.join(missing)}")
    unknown = sorted(set(manifest) - set(REQUIRED_MANIFEST_KEYS) - set(OPTIONAL_MANIFEST_KEYS))
    if unknown:
        raise fail(f"{path} has unknown keys {', '.join(map(str, unknown))}; allowed: "
                   f"{', '.join(REQUIRED_MANIFEST_KEYS + OPTIONAL_MANIFEST_KEYS)} (free entries go under metadata)")
    if manifest["format"] != FORMAT_NAME:
        raise fail(f"{path}: format must be {FORMAT_NAME!r}, got {manifest['format']!r}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise fail(f"{path}: format_version {manifest['format_version']!r} is not supported; "
                   f"this visreps reads version {FORMAT_VERSION}")
    if manifest["kind"] not in ("neural", "behaviour"):
        raise fail(f"{path}: kind must be 'neural' or 'behaviour', got {manifest['kind']!r}")
    if not isinstance(manifest["name"], str) or not manifest["name"].strip():
        raise fail(f"{path}: name must be a non-empty string")
    subjects = manifest["subjects"]
    if not isinstance(subjects, list) or not subjects or not all(isinstance(s, str) and s for s in subjects):
        raise fail(f"{path}: subjects must be a non-empty list of names")
    if len(set(subjects)) != len(subjects):
        raise fail(f"{path}: subjects are listed twice: {duplicates(subjects)}")
    manifest["regions"] = _regions_per_subject(manifest["regions"], subjects, path)
    manifest.setdefault("description", "")
    manifest.setdefault("test_only", False)
    if manifest["kind"] == "neural":
        manifest.setdefault("responses", DEFAULT_RESPONSES)
        template = manifest["responses"]
        if not isinstance(template, str) or "{subject}" not in template or "{region}" not in template:
            raise fail(f"{path}: responses must be a path template with {{subject}} and {{region}}, got {template!r}")
    else:
        manifest.setdefault("behaviour", "behaviour.npz")
        if len(subjects) != 1 or any(len(r) != 1 for r in manifest["regions"].values()):
            raise fail(f"{path}: a behaviour dataset has one subject and one region (e.g. group / behaviour)")
    return manifest


def _regions_per_subject(regions: Any, subjects: list[str], path: Path) -> dict[str, list[str]]:
    if isinstance(regions, list):
        regions = {subject: regions for subject in subjects}
    if not isinstance(regions, dict) or set(regions) != set(subjects):
        raise fail(f"{path}: regions must be a list (same for every subject) or a mapping with one entry "
                   f"per subject ({', '.join(subjects)})")
    for subject, names in regions.items():
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise fail(f"{path}: regions of {subject} must be a non-empty list of names")
        if len(set(names)) != len(names):
            raise fail(f"{path}: regions of {subject} are listed twice: {duplicates(names)}")
    return {subject: list(regions[subject]) for subject in subjects}


def duplicates(values: Iterable[Any], limit: int = 5) -> str:
    seen: set[Any] = set()
    repeated: list[str] = []
    for value in values:
        if value in seen and str(value) not in repeated:
            repeated.append(str(value))
        seen.add(value)
    more = f" (and {len(repeated) - limit} more)" if len(repeated) > limit else ""
    return ", ".join(repeated[:limit]) + more


def read_stimulus_table(path: Path, need_concept: bool) -> pd.DataFrame:
    """Read ``stimuli.csv`` (ids and paths as text; other columns numeric where they parse) and check it."""
    if not path.is_file():
        raise fail(f"stimulus table {path} is missing; write it with columns stimulus_id,image"
                   + (",concept" if need_concept else ""))
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise fail(f"stimulus table {path} cannot be read as CSV: {error}") from None
    required = ["stimulus_id", "image"] + (["concept"] if need_concept else [])
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise fail(f"stimulus table {path} lacks the columns {', '.join(missing)}")
    if table.empty:
        raise fail(f"stimulus table {path} has no rows")
    for column in required:
        empty = table.index[table[column].str.strip() == ""]
        if len(empty):
            raise fail(f"stimulus table {path}: column {column} is empty on line(s) "
                       f"{', '.join(str(i + 2) for i in empty[:5])}")
    if table["stimulus_id"].duplicated().any():
        raise fail(f"stimulus table {path}: duplicate stimulus ids {duplicates(table['stimulus_id'])}; "
                   "every row needs its own id")
    for column in table.columns:
        if column not in required:
            try:
                table[column] = pd.to_numeric(table[column])
            except (ValueError, TypeError):
                pass
    return table


# ---------------------------------------------------------------- arrays


def npz_members(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an ``.npz`` without reading the data (npy format 1.0 / 2.0)."""
    if not path.is_file():
        raise fail(f"array file {path} is missing; write it with np.savez (see the format)")
    members: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                with archive.open(info) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                    else:
                        with np.load(path, allow_pickle=False) as data:
                            array = data[name]
                            shape, dtype = array.shape, array.dtype
                members[name] = (tuple(shape), dtype)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise fail(f"array file {path} is not a readable .npz archive ({error}); save it with np.savez") from None
    return members


def load_npz(path: Path, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Load the named arrays (no pickles); object arrays raise a DatasetError saying how to store text."""
    out = {}
    with np.load(path, allow_pickle=False) as data:
        for name in names:
            try:
                out[name] = data[name]
            except ValueError:
                raise fail(f"{path}: array {name} holds Python objects; store ids as fixed-width text, "
                           "np.asarray(ids, dtype=str), and numbers as float arrays") from None
    return out


def check_text(name: str, shape: tuple[int, ...], dtype: np.dtype, where: str) -> None:
    if dtype.kind == "O":
        raise fail(f"{where}: array {name} holds Python objects; store it as np.asarray(values, dtype=str)")
    if dtype.kind not in "US":
        raise fail(f"{where}: array {name} must hold text (np.asarray(ids, dtype=str)), got dtype {dtype}")
    if len(shape) != 1:
        raise fail(f"{where}: array {name} must be 1-D, got shape {shape}")


def check_numeric(name: str, dtype: np.dtype, where: str) -> None:
    if dtype.kind not in "fiu":
        raise fail(f"{where}: array {name} must be numeric (float32 preferred), got dtype {dtype}")


def check_response_arrays(members: Mapping[str, tuple[tuple[int, ...], np.dtype]], train_ids: np.ndarray,
                          test_ids: np.ndarray, known_ids: set[str] | None, where: str, test_only: bool) -> int:
    """Check names, shapes and ids of one subject/region's arrays; return the number of units."""
    missing = [name for name in RESPONSE_ARRAYS if name not in members]
    if missing:
        raise fail(f"{where} lacks the arrays {', '.join(missing)}")
    allowed = set(RESPONSE_ARRAYS) | set(OPTIONAL_RESPONSE_ARRAYS)
    unknown = sorted(name for name in members if name not in allowed and not name.startswith(INFO_PREFIX))
    if unknown:
        raise fail(f"{where} has unknown arrays {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}, "
                   f"or names starting with {INFO_PREFIX!r} (copied into Responses.info)")
    for name in ("train_ids", "test_ids"):
        check_text(name, *members[name], where)
    n_train, n_test = len(train_ids), len(test_ids)
    train_shape, test_shape = members["train"][0], members["test"][0]
    for name, shape, n in (("train", train_shape, n_train), ("test", test_shape, n_test)):
        check_numeric(name, members[name][1], where)
        if len(shape) != 2 or shape[0] != n:
            raise fail(f"{where}: array {name} must be ({name}_ids, units) = ({n}, n_units), got shape {shape}")
    if train_shape[1] != test_shape[1]:
        raise fail(f"{where}: train has {train_shape[1]} units but test has {test_shape[1]}")
    n_units = test_shape[1]
    if n_units == 0:
        raise fail(f"{where}: the region has no units (arrays of shape {test_shape}); leave the region out "
                   "of the manifest or add its units")
    if n_test == 0:
        raise fail(f"{where}: no test stimuli (test_ids is empty)")
    if n_train == 0 and not test_only:
        raise fail(f"{where}: no training stimuli; set test_only: true in the manifest for a test-only dataset")
    for name, n in (("train_repetitions", n_train), ("test_repetitions", n_test)):
        if name in members:
            shape = members[name][0]
            check_numeric(name, members[name][1], where)
            if len(shape) != 3 or shape[0] != n or shape[2] != n_units or shape[1] < 1:
                raise fail(f"{where}: array {name} must be (stimuli, repetitions, units) = ({n}, r, {n_units}), "
                           f"got shape {shape}")
    if "noise_ceiling" in members:
        check_numeric("noise_ceiling", members["noise_ceiling"][1], where)
        if members["noise_ceiling"][0] != (n_units,):
            raise fail(f"{where}: noise_ceiling must have shape ({n_units},), got {members['noise_ceiling'][0]}")
    for name, ids in (("train_ids", train_ids), ("test_ids", test_ids)):
        if len(set(ids.tolist())) != len(ids):
            raise fail(f"{where}: {name} lists stimuli twice: {duplicates(ids.tolist())}")
    overlap = sorted(set(train_ids.tolist()) & set(test_ids.tolist()))
    if overlap:
        raise fail(f"{where}: stimuli in both train_ids and test_ids: {', '.join(overlap[:5])}"
                   f"{' ...' if len(overlap) > 5 else ''}; the splits must be disjoint")
    if known_ids is not None:
        unknown_ids = [i for i in np.concatenate([train_ids, test_ids]).tolist() if i not in known_ids]
        if unknown_ids:
            raise fail(f"{where}: {len(unknown_ids)} ids are not stimulus_ids of stimuli.csv "
                       f"(first: {', '.join(unknown_ids[:5])})")
    return int(n_units)


def drop_nonfinite_units(arrays: dict[str, np.ndarray], where: str) -> list[int]:
    """Remove units with a NaN/inf in train, test or noise_ceiling (in place); warn; return their indices."""
    bad = ~(np.isfinite(arrays["train"]).all(axis=0) & np.isfinite(arrays["test"]).all(axis=0))
    if "noise_ceiling" in arrays:
        bad |= ~np.isfinite(arrays["noise_ceiling"])
    dropped = np.flatnonzero(bad).tolist()
    if not dropped:
        return []
    if len(dropped) == bad.size:
        raise fail(f"{where}: every unit has NaN or infinite values; nothing is left to score")
    warnings.warn(f"{where}: dropped {len(dropped)} of {bad.size} units with NaN or infinite values "
                  f"(indices {dropped[:10]}{' ...' if len(dropped) > 10 else ''}); see Responses.info['dropped_units']",
                  stacklevel=3)
    keep = ~bad
    for name in ("train", "test", "noise_ceiling"):
        if name in arrays:
            arrays[name] = arrays[name][..., keep]
    for name in ("train_repetitions", "test_repetitions"):
        if name in arrays:
            arrays[name] = arrays[name][:, :, keep]
    return dropped
