"""Multi-process data-parallel training (DDP) launched by ``torchrun``.

``torchrun --nproc-per-node N -m visreps.cli train ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; ``init_distributed()`` reads them and starts the process group (NCCL on
CUDA, gloo on CPU). Rank 0 alone talks to MLflow and writes checkpoints; every rank trains on its shard of each
epoch's seeded permutation (``DistributedSampler``) and evaluates its share of the held-out images, and the
sums are all-reduced. Without those variables everything here is a no-op (world size 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from visreps.training.errors import TrainingError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    started_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the local CUDA device when there is one, else CPU; otherwise the device named."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise TrainingError(f"device={requested!r} is not a torch device ({error}); use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device={requested!r} but CUDA is not available here; use device=auto or cpu")
    return device


def init_distributed(requested_device: str = "auto") -> DistContext:
    """Start the process group when launched by torchrun (or join one already started); else world size 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=pick_device(requested_device))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = pick_device(requested_device, local_rank)
    started = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        started = True
    return DistContext(rank, world_size, local_rank, device, started)


def shutdown_distributed(context: DistContext) -> None:
    """End the process group if ``init_distributed`` started it."""
    if context.started_here and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(context: DistContext, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (pickled; small objects only)."""
    if not context.enabled:
        return value
    box = [value if context.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sums(context: DistContext, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums of ``values`` over all ranks (float64)."""
    if not context.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()
