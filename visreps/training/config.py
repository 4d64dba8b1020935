"""The training configuration (``configs/train/default.yaml`` holds the docs/method.md §2 recipe).

Fields declared with ``runtime_field`` (speed knobs, bookkeeping) are left out of the config hash, so changing
them re-uses a finished run and resumes the same local checkpoints.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field, field_validator

from visreps.config import ConfigModel, StageConfig, runtime_field



class DatasetSection(ConfigModel):
    """Training images: a class-folder tree ``<root>/<class>/<image>`` (ImageNet train layout)."""

    root: str = Field("", description="class-folder tree <root>/<class>/<image>, or 'demo' (the demo's train_images)")
    heldout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="fraction held out for accuracy")
    split_seed: int = Field(42, description="seed of the train/held-out split (the labels stage uses the same)")
    listing: Literal["check", "trust", "rescan"] = runtime_field(
        "check", description="check: the stored file listing with every file's size and time read again; trust: "
                             "the stored listing as it is (network file systems; misses files overwritten in place); "
                             "rescan: walk the tree again")


class LabelsSection(ConfigModel):
    """Which labels to train on."""

    table: str = Field("fine", description="'fine' (folder classes), a .parquet/.csv path, or runs:/<id>/label_tables/kK.parquet")
    source_name: str = Field("", description="label source for tags and the model alias, e.g. pca_pixels ('fine' for table=fine)")
    num_classes: int | None = Field(None, description="K; default: from 'k<K>' in the table name, else max label + 1")
    allow_unlabelled: bool = Field(
        False, description="train on the images the table labels only (labels run with max_images or skipped files)")

    @field_validator("num_classes")
    @classmethod
    def _at_least_two(cls, value: int | None) -> int | None:
        if value is not None and value < 2:
            raise ValueError(f"K={value}: a classifier needs K >= 2 classes")
        return value


class ModelSection(ConfigModel):
    """The network trained from scratch."""

    architecture: str = Field("custom_cnn", description="custom_cnn, custom_cnn_small or timm:<name>")
    image_size: int | None = Field(None, ge=16, description="input side in pixels; default: the architecture's own")
    options: dict[str, Any] = Field(default_factory=dict, description="extra constructor arguments (e.g. img_size for ViT)")

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        from visreps.models import check_architecture

        check_architecture(value)
        return value


# pydantic warns that a field called "register" shadows ABCMeta.register of the class; instances are unaffected
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class TrainConfig(StageConfig):
    """Everything a training run needs; defaults are the published recipe (docs/method.md §2)."""

    experiment: str = runtime_field("visreps-train")
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    labels: LabelsSection = Field(default_factory=LabelsSection)
    model: ModelSection = Field(default_factory=ModelSection)
    seed: int = Field(1, description="seed of initialisation, data order, augmentation and dropout")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1, description="images per step (per process under DDP)")
    lr: float = Field(5e-4, gt=0.0, description="peak AdamW learning rate")
    weight_decay: float = Field(1e-3, ge=0.0, description="AdamW decay of weight matrices only (not biases, BN)")
    warmup_epochs: int = Field(2, ge=0)
    warmup_start_factor: float = Field(0.25, gt=0.0, le=1.0, description="lr factor at epoch 0 of the warm-up")
    final_lr_factor: float = Field(0.05, ge=0.0, le=1.0, description="lr factor the cosine decays to")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    grad_clip: float = Field(1.0, ge=0.0, description="max gradient norm (0: no clipping)")
    flip_probability: float = Field(0.5, ge=0.0, le=1.0)
    rotation_degrees: float = Field(10.0, ge=0.0, le=180.0)
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="auto: bf16 (or fp16) on CUDA, off on CPU")
    channels_last: bool = runtime_field(True)
    compile: bool = runtime_field(False, description="torch.compile the network")
    deterministic: bool = runtime_field(False, description="torch deterministic algorithms")
    checkpoint_every: int = runtime_field(5, ge=0, description="epochs between checkpoints (0: end only)")
    num_workers: int = runtime_field(4, ge=0, description="data-loading processes (file mode)")
    image_source: Literal["auto", "memory", "files", "cache"] = runtime_field(
        "auto", description="memory: all images decoded once into memory; files: decoded by num_workers loader "
                            "processes each epoch; cache: read from the pixel cache (`visreps image_cache`); auto: "
                            "memory up to 20,000 images, else the cache when built, else files")
    device: str = runtime_field("auto", description="auto, cpu, cuda, cuda:1, ...")
    progress: bool = runtime_field(True, description="tqdm bars (shown on a terminal only)")
    register: bool = runtime_field(True, description="register final and epoch-0 models")
    registered_name: str = runtime_field("", description="default visreps-<architecture>")
    alias: str = runtime_field("", description="default k<K>-<source>-s<seed>")
    log_checkpoints: bool = runtime_field(True, description="log checkpoints as run artifacts")
    log_pytorch_model: bool = runtime_field(
        True,
        description="also log the final network as an MLflow pytorch-flavour model (mlflow_model/, pickle format)")
    system_metrics: bool = runtime_field(False, description="log CPU/GPU/memory use every 10 s")
    force: bool = runtime_field(False, description="train again even if an identical run finished")

    @property
    def image_size(self) -> int:
        """The input side in pixels (``model.image_size`` or the architecture's default)."""
        from visreps.models import default_image_size

        if self.model.image_size is not None:
            return int(self.model.image_size)
        return default_image_size(self.model.architecture, **self.model.options)

    @property
    def label_source(self) -> str:
        """Name of the label source for tags and aliases."""
        if self.labels.source_name:
            return self.labels.source_name
        return "fine" if self.labels.table == "fine" else ""
