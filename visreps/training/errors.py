"""Errors the training layer raises for bad input or an unusable environment."""

from visreps.errors import VisrepsError


class TrainingError(VisrepsError, RuntimeError):
    """Training cannot start or go on (bad labels, out of memory, ...); the message says how to fix it."""


class CheckpointError(TrainingError):
    """A checkpoint is unreadable or belongs to another configuration; the message names the file and keys."""


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/CPU allocation failures (``torch.cuda.OutOfMemoryError`` or a RuntimeError saying so)."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def out_of_memory_error(batch_size: int, device: str, error: BaseException) -> TrainingError:
    """The TrainingError to raise in place of an allocation failure, with the fix."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return TrainingError(
        f"out of memory on {device} at batch_size={batch_size} ({first_line}); lower the batch size "
        f"(e.g. batch_size={max(1, batch_size // 2)}), use amp=bf16/fp16 on a GPU, or a smaller model.image_size"
    )


class TrainingStopped(VisrepsError, RuntimeError):
    """A per-epoch callback stopped the training on purpose (e.g. a sweep's pruner); not a failure of the code."""
