"""Configuration of the labels stage (``visreps labels``; defaults in configs/labels/default.yaml): the image
collection, the feature source, the PCA and the compute settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from visreps.config import ConfigModel, StageConfig, runtime_field
from visreps.labels.coarse import check_ks


class DatasetSection(ConfigModel):
    """Training images: a class-folder tree, the train/held-out split (same as training's) and bad files."""

    root: str = Field("", description="class-folder tree <root>/<class>/<image> (e.g. ImageNet train)")
    max_images: int | None = Field(None, ge=2, description="keep a seeded random subset (seed) for quick runs")
    heldout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="held-out share, as in training")
    split_seed: int = Field(42, description="seed of the train/held-out split, as in training")
    on_corrupt_image: Literal["fail", "skip"] = "fail"
    listing: Literal["check", "trust", "rescan"] = runtime_field(
        "check", description="check: the stored file listing with every file's size and time read again; trust: "
                             "the stored listing as it is (network file systems; misses files overwritten in place); "
                             "rescan: walk the tree again")


class SourceSection(ConfigModel):
    """Where features come from (see the stage docstring)."""

    kind: Literal["pixels", "timm", "torchvision", "model"] = "pixels"
    name: str = Field("", description="timm/torchvision model name, or (kind=model) a checkpoint path or URI")
    weights: str = Field("cache", description="'cache', 'random' or a weights file (timm/torchvision)")
    layer: str = Field("", description="'' = the source's default layer; a module name, 'output', 'pre_logits'")
    token: Literal["auto", "cls", "mean", "flatten"] = "auto"
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="timm/torchvision constructor options")
    image_size: int | None = Field(None, ge=1, description="timm/torchvision input side (default: the model's)")
    pixel_size: int = Field(16, ge=1, description="kind=pixels: images resized and centre-cropped to this side")
    grayscale: bool = False

    @model_validator(mode="after")
    def _name_given(self) -> "SourceSection":
        if self.kind != "pixels" and not self.name:
            raise ValueError(f"source.kind={self.kind} needs source.name (a model name, checkpoint path or URI)")
        return self


class PCASection(ConfigModel):
    n_pcs: int | None = Field(None, ge=1, description="PCs computed and stored; default log2(max K)")
    fit_split: Literal["train", "all"] = Field("train", description="images whose features fit PCA and medians")
    cache_features: bool = Field(False, description="keep float16 features on disk instead of a 2nd forward pass")


class ComputeSection(ConfigModel):
    device: str = Field("auto", description="auto (cuda when available), cpu, cuda, cuda:1 ...")
    batch_size: int = Field(128, ge=1)
    num_workers: int = Field(4, ge=0, description="image-decoding DataLoader workers")
    cache_dir: str = Field("", description="folder for the feature cache (default: <VISREPS_HOME>/cache/labels)")
    progress: bool = True


class LabelsConfig(StageConfig):
    """Configuration of the labels stage (defaults in configs/labels/default.yaml)."""

    experiment: str = runtime_field("visreps-labels")
    name: str = Field("", description="label source name for run tags, label tables and model aliases "
                                      "(default pca_<source>: pca_pixels, pca_alexnet, pca_model)")
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    source: SourceSection = Field(default_factory=SourceSection)
    ks: list[int] = Field(default_factory=lambda: [2, 4, 8, 16, 32, 64])
    pca: PCASection = Field(default_factory=PCASection)
    seed: int = Field(0, description="max_images subset, random-init weights, scatter-plot subsample")
    figures: bool = True
    n_pole_images: int = Field(8, ge=1)
    csv: bool = Field(True, description="also export label tables as CSV")
    compute: ComputeSection = runtime_field(default_factory=ComputeSection)
    force: bool = runtime_field(False, description="recompute even if an identical run exists")

    @field_validator("ks")
    @classmethod
    def _powers_of_two(cls, ks: list[int]) -> list[int]:
        return check_ks(ks)

    @property
    def label_source(self) -> str:
        """``name``, or ``pca_<source>`` (pixels, the timm/torchvision model name, or ``model``)."""
        if self.name:
            return self.name
        source = "pixels" if self.source.kind == "pixels" else ("model" if self.source.kind == "model"
                                                                else self.source.name)
        return f"pca_{source}"
