"""Reading MATLAB .mat files as published by dataset authors: v5 (SciPy) and v7.3 (HDF5).

MATLAB v7.3 files are HDF5: arrays are stored with their axes reversed (MATLAB (a, b, c) reads as (c, b, a)
with h5py), strings are uint16 character arrays, and cell arrays / struct-array fields are datasets of object
references into the ``#refs#`` group. Every failure becomes a DatasetError naming the file and the variable.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import scipy.io

from visreps.data.base import DatasetError


@contextmanager
def open_hdf5(path: str | Path, what: str) -> Iterator[h5py.File]:
    """Open an HDF5 file read-only; a missing, truncated or non-HDF5 file raises a DatasetError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what}: file {path} does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DatasetError(
            f"{what}: cannot open {path} as HDF5 ({error}); the file is truncated or corrupt: download it again"
        ) from None
    try:
        yield handle
    finally:
        handle.close()


def hdf5_dataset(handle: h5py.File, name: str, what: str) -> h5py.Dataset:
    """``handle[name]`` as a dataset; raise a DatasetError listing the keys present when it is absent."""
    node = handle.get(name)
    if not isinstance(node, h5py.Dataset):
        keys = ", ".join(sorted(k for k in handle.keys() if not k.startswith("#"))) or "none"
        raise DatasetError(f"{what}: {handle.filename} has no dataset {name!r} (it holds: {keys})")
    return node


def matlab_shape(node: h5py.Dataset) -> tuple[int, ...]:
    """The size MATLAB shows for a v7.3 variable (h5py's shape reversed); the stored shape for plain HDF5."""
    return tuple(node.shape[::-1]) if "MATLAB_class" in node.attrs else tuple(node.shape)


def is_mat73(path: str | Path) -> bool:
    """True for a MATLAB v7.3 (HDF5) file."""
    return h5py.is_hdf5(str(path))


def read_mat_arrays(path: str | Path, names: Sequence[str], what: str) -> dict[str, np.ndarray]:
    """Numeric variables ``names`` of a .mat file (v5 or v7.3) in MATLAB axis order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what}: file {path} does not exist")
    out: dict[str, np.ndarray] = {}
    if is_mat73(path):
        with open_hdf5(path, what) as handle:
            for name in names:
                out[name] = np.asarray(hdf5_dataset(handle, name, what)[()]).T
        return out
    try:
        content = scipy.io.loadmat(str(path), variable_names=list(names))
    except (ValueError, OSError, TypeError) as error:
        raise DatasetError(f"{what}: cannot read {path} as a MATLAB file ({error}); download it again") from None
    for name in names:
        if name not in content:
            present = ", ".join(sorted(entry[0] for entry in scipy.io.whosmat(str(path)))) or "none"
            raise DatasetError(f"{what}: {path} has no variable {name!r} (it holds: {present})")
        out[name] = np.asarray(content[name])
    return out


def oriented(array: np.ndarray, expected: Sequence[int | None], what: str) -> np.ndarray:
    """``array`` with its axes in the order of ``expected`` (None = any size).

    Tries the array as stored and with its axes reversed (MATLAB v7.3 storage), so files written by MATLAB
    and by NumPy both work; raises a DatasetError showing both shapes when neither matches.
    """
    def matches(shape: tuple[int, ...]) -> bool:
        return len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))

    for candidate in (array.T, array):
        if matches(candidate.shape):
            return candidate
    wanted = "(" + ", ".join("any" if e is None else str(e) for e in expected) + ")"
    raise DatasetError(f"{what}: shape {array.shape} does not match the expected {wanted} in either axis order")


def _decode_chars(node: h5py.Dataset) -> str:
    if node.attrs.get("MATLAB_empty", 0):
        return ""
    codes = np.asarray(node[()])
    if codes.dtype.kind not in "uif":
        raise DatasetError(f"{node.file.filename}: {node.name} is not a MATLAB char array (dtype {codes.dtype})")
    return "".join(chr(int(c)) for c in codes.T.ravel())


def _strings_from_node(handle: h5py.File, node: Any, fields: Sequence[str], what: str) -> list[str]:
    if isinstance(node, h5py.Group):
        for field in fields:
            if field in node:
                return _strings_from_node(handle, node[field], fields, what)
        raise DatasetError(
            f"{what}: struct {node.name} in {handle.filename} has none of the fields {', '.join(fields)} "
            f"(it has: {', '.join(node.keys())})"
        )
    if not isinstance(node, h5py.Dataset):
        raise DatasetError(f"{what}: {handle.filename} holds no string list at {node!r}")
    if node.dtype == h5py.ref_dtype:
        refs = np.asarray(node[()]).ravel()
        out: list[str] = []
        for ref in refs:
            target = handle[ref]
            if isinstance(target, h5py.Dataset) and target.dtype == h5py.ref_dtype:
                out.extend(_strings_from_node(handle, target, fields, what))
            elif isinstance(target, h5py.Dataset):
                out.append(_decode_chars(target))
            else:
                raise DatasetError(f"{what}: {handle.filename}: a cell of {node.name} is not a string")
        return out
    return [_decode_chars(node)]


def _flatten_strings(value: Any, fields: Sequence[str]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        for field in fields:
            if field in value:
                return _flatten_strings(value[field], fields)
        raise DatasetError(f"struct has none of the fields {', '.join(fields)} (it has: {', '.join(value)})")
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        return [str(v) for v in value.ravel()]
    if isinstance(value, (list, tuple, np.ndarray)):
        out: list[str] = []
        for item in (value.ravel() if isinstance(value, np.ndarray) else value):
            out.extend(_flatten_strings(item, fields))
        return out
    raise DatasetError(f"expected strings, found {type(value).__name__}")


def read_mat_strings(path: str | Path, name: str, what: str, fields: Sequence[str] = ()) -> list[str]:
    """A cell array of strings ``name`` (or, for a struct array, its first field among ``fields``)."""
    path = Path(path)
    if is_mat73(path):
        with open_hdf5(path, what) as handle:
            if name not in handle:
                keys = ", ".join(sorted(k for k in handle.keys() if not k.startswith("#"))) or "none"
                raise DatasetError(f"{what}: {path} has no variable {name!r} (it holds: {keys})")
            return _strings_from_node(handle, handle[name], fields, f"{what} ({path})")
    if not path.is_file():
        raise DatasetError(f"{what}: file {path} does not exist")
    try:
        content = scipy.io.loadmat(str(path), variable_names=[name], simplify_cells=True)
    except (ValueError, OSError, TypeError) as error:
        raise DatasetError(f"{what}: cannot read {path} as a MATLAB file ({error}); download it again") from None
    if name not in content:
        raise DatasetError(f"{what}: {path} has no variable {name!r}")
    try:
        return _flatten_strings(content[name], fields)
    except DatasetError as error:
        raise DatasetError(f"{what}: {path} variable {name!r}: {error}") from None
