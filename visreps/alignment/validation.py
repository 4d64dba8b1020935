"""Input checks shared by the alignment functions: one clear exception, raised before long work starts."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from visreps.errors import VisrepsError

#: fewest stimuli any alignment score is defined for (an RDM needs ≥ 3 entries to be correlated)
MIN_STIMULI = 3


class AlignmentInputError(VisrepsError, ValueError):
    """Bad input to an alignment function; the message names the array, its shape and how to fix it."""


def resolve_device(device: str | torch.device | None, *arrays: Any) -> torch.device:
    """``device`` if given, else the device of the first torch tensor among ``arrays``, else CPU."""
    if device is not None:
        return torch.device(device)
    for array in arrays:
        if isinstance(array, torch.Tensor):
            return array.device
    return torch.device("cpu")


def block_to_tensor(block: Any) -> torch.Tensor:
    """A block read from numpy / memmap / h5py / torch as a tensor (read-only numpy data is copied)."""
    if isinstance(block, torch.Tensor):
        return block
    array = np.ascontiguousarray(block)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def as_tensor(array: Any, name: str, *, dtype: torch.dtype | None = None,
              device: str | torch.device | None = None) -> torch.Tensor:
    """``array`` (numpy, torch, or anything numpy accepts) as a torch tensor, without copying when possible.

    Integer and boolean arrays become float64; float16/bfloat16 become float32.
    """
    if isinstance(array, torch.Tensor):
        tensor = array
    else:
        try:
            tensor = block_to_tensor(np.asarray(array))
        except (TypeError, ValueError) as error:
            raise AlignmentInputError(f"{name} is not a numeric array ({type(array).__name__}): {error}") from error
    if dtype is None:
        if not tensor.is_floating_point():
            dtype = torch.float64
        elif tensor.dtype in (torch.float16, torch.bfloat16):
            dtype = torch.float32
    return tensor.to(device=device if device is not None else tensor.device, dtype=dtype or tensor.dtype)


def check_finite(tensor: torch.Tensor, name: str, *, where: str = "") -> None:
    """Raise if ``tensor`` holds NaN or ±inf, naming the first bad element.

    The check is one min/max pass (NaN propagates through both, ±inf shows as an extreme), several times
    faster than ``isfinite(...).all()`` on the CPU and free of a full-size temporary; the bad element is only
    searched for when there is one.
    """
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return
    low, high = torch.aminmax(tensor)
    if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
        bad = torch.nonzero(~torch.isfinite(tensor))[0].tolist()
        raise AlignmentInputError(
            f"{name} has non-finite values (NaN or inf){where}, first at index {tuple(bad)} of shape "
            f"{tuple(tensor.shape)}; remove or impute those units/stimuli before scoring"
        )


def check_matrix(array: Any, name: str, *, min_rows: int = MIN_STIMULI, dtype: torch.dtype | None = None,
                 device: str | torch.device | None = None) -> torch.Tensor:
    """A finite 2-D tensor (rows = stimuli) with at least ``min_rows`` rows and one column."""
    tensor = as_tensor(array, name, dtype=dtype, device=device)
    if tensor.ndim != 2:
        raise AlignmentInputError(
            f"{name} must be 2-D (stimuli × features), got shape {tuple(tensor.shape)}; "
            "flatten the feature dimensions first (e.g. x.reshape(len(x), -1))"
        )
    if tensor.shape[0] < min_rows:
        raise AlignmentInputError(
            f"{name} has {tensor.shape[0]} stimuli (rows); at least {min_rows} are needed"
        )
    if tensor.shape[1] < 1:
        raise AlignmentInputError(f"{name} has no columns (shape {tuple(tensor.shape)})")
    check_finite(tensor, name)
    return tensor


def check_same_stimuli(first: Any, second: Any, first_name: str, second_name: str) -> None:
    """Raise unless both arrays have the same number of stimuli (rows)."""
    if first.shape[0] != second.shape[0]:
        raise AlignmentInputError(
            f"{first_name} has {first.shape[0]} stimuli but {second_name} has {second.shape[0]}; "
            "both must hold the same stimuli in the same order"
        )


def check_rdm(array: Any, name: str, *, device: str | torch.device | None = None) -> torch.Tensor:
    """A finite square float64 RDM with at least MIN_STIMULI stimuli (only its strict upper triangle is used)."""
    tensor = as_tensor(array, name, dtype=torch.float64, device=device)
    if tensor.ndim != 2 or tensor.shape[0] != tensor.shape[1]:
        raise AlignmentInputError(
            f"{name} must be a square stimuli × stimuli RDM, got shape {tuple(tensor.shape)}"
        )
    if tensor.shape[0] < MIN_STIMULI:
        raise AlignmentInputError(f"{name} has {tensor.shape[0]} stimuli; at least {MIN_STIMULI} are needed")
    rows, cols = torch.triu_indices(tensor.shape[0], tensor.shape[0], offset=1, device=tensor.device)
    check_finite(tensor[rows, cols], name, where=" in its upper triangle")
    return tensor


def check_not_constant(vector: torch.Tensor, name: str) -> None:
    """Raise if a vector to be correlated is constant (its correlation is undefined)."""
    if vector.numel() < 2 or bool((vector == vector[0]).all()):
        raise AlignmentInputError(
            f"{name} is constant ({vector.numel()} values all equal {float(vector[0]) if vector.numel() else 'n/a'}); "
            "a correlation with it is undefined"
        )


def constant_columns(matrix: torch.Tensor) -> torch.Tensor:
    """Indices of the columns of ``matrix`` whose values are all equal."""
    return torch.nonzero((matrix == matrix[:1]).all(dim=0)).flatten()


def check_no_constant_columns(matrix: torch.Tensor, name: str, what: str = "targets") -> None:
    """Raise if any column is constant, listing up to ten of them."""
    constant = constant_columns(matrix)
    if constant.numel():
        shown = ", ".join(str(i) for i in constant[:10].tolist())
        raise AlignmentInputError(
            f"{name} has {constant.numel()} constant {what} (columns {shown}"
            f"{', ...' if constant.numel() > 10 else ''}); their correlation is undefined: drop them before scoring"
        )


def check_fraction(value: float, name: str) -> float:
    """A number in (0, 1]."""
    if not 0.0 < float(value) <= 1.0:
        raise AlignmentInputError(f"{name} must be in (0, 1], got {value}")
    return float(value)
