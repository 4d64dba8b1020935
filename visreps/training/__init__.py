"""Training: the docs/method.md §2 recipe on any label set, with exact resume, mixed precision and DDP.

- ``TrainConfig`` (``visreps.training.config``): the configuration; defaults are the published recipe.
- ``training_labels`` / ``BatchStream`` (``visreps.training.data``): labels matched to images, seeded batches.
- ``Trainer`` (``visreps.training.trainer``): the loop, checkpoints every N epochs, resume.
- ``init_distributed`` (``visreps.training.distributed``): DDP under torchrun.
"""

from visreps.training.checkpoints import (
    export_model_file,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from visreps.training.config import TrainConfig
from visreps.training.data import BatchStream, TrainingLabels, decode_all, training_labels
from visreps.training.distributed import DistContext, init_distributed, shutdown_distributed
from visreps.training.errors import CheckpointError, TrainingError
from visreps.training.schedule import lr_factor, parameter_groups
from visreps.training.trainer import Trainer, TrainResult, resolve_amp

__all__ = [
    "BatchStream",
    "CheckpointError",
    "DistContext",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "TrainingLabels",
    "decode_all",
    "export_model_file",
    "init_distributed",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "lr_factor",
    "parameter_groups",
    "resolve_amp",
    "shutdown_distributed",
    "training_labels",
]
