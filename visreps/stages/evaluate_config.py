"""Configuration of the evaluate stage (defaults in configs/evaluate/default.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from visreps.alignment.projection import DEFAULT_COMPONENTS
from visreps.config import StageConfig, runtime_field
from visreps.data import DATASET_CLASSES, dataset_name

ANALYSES = ("rsa", "encoding")
#: the demo's own folders, besides the dataset readers (visreps.data.DATASET_CLASSES)
DEMO_DATASETS = ("demo", "demo_behaviour")


class EvaluateConfig(StageConfig):
    """One model on one dataset: per (subject, region) layer selection, test score, CI and noise ceiling.

    ``model`` is not part of the run identity itself: the weights it resolves to are (their fingerprint is an
    input of the run), so a registry alias that moves to another version is another evaluation.
    """

    experiment: str = runtime_field("visreps-evaluate")
    model: str = runtime_field("",
                       description="models:/name@alias, models:/name/<version>, runs:/<id>/<path>, a model file, "
                                   "timm:<name> or torchvision:<name>")
    weights: str = Field("cache", description="timm/torchvision weights: cache, random or a local file")
    image_size: int | None = Field(None, ge=8, description="timm/torchvision input side (default: the model's)")
    dataset: str = Field("demo", description="demo, demo_behaviour, generic, nsd, nsd_synthetic (after nsd), tvsd, things")
    dataset_root: str = Field("", description="where the dataset lies (not needed for demo and demo_behaviour)")
    dataset_options: dict[str, Any] = Field(default_factory=dict, description="options of the dataset reader")
    analysis: Literal["rsa", "encoding", "both"] = "rsa"
    subjects: list[str] = Field(default_factory=list, description="[] = every subject")
    regions: list[str] = Field(default_factory=list, description="[] = every region")
    points: list[str] = Field(default_factory=list, description="[] = the model's default extraction points")
    token: Literal["auto", "cls", "mean", "flatten"] = Field("flatten", description="token/feature-map reduction")
    compare: Literal["spearman", "kendall"] = "spearman"
    projection_dim: int = Field(DEFAULT_COMPONENTS, ge=1, description="sparse random projection size k")
    n_rsa_stimuli: int = Field(1000, ge=3, description="seeded training stimuli for RSA layer selection")
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="encoding selection: validation share")
    n_bootstrap: int = Field(1000, ge=0)
    bootstrap_fraction: float = Field(0.9, gt=0.0, le=1.0, description="share of test stimuli per resample")
    bootstrap_replace: bool = Field(False, description="false: the study's subsampling; true: classical bootstrap")
    ci_level: float = Field(0.95, gt=0.0, lt=1.0)
    seed: int = Field(0, description="drives selection subsample/split, projection and bootstrap")
    autocast: Literal["none", "bf16", "fp16"] = Field("none", description="activations in autocast (recorded)")
    device: str = runtime_field("auto")
    batch_size: int = runtime_field(64, ge=1)
    num_workers: int = runtime_field(0, ge=0)
    progress: bool = runtime_field(True)
    cache_dir: str = runtime_field("",
                           description="feature cache folder (default <VISREPS_HOME>/cache/activations)")
    force: bool = runtime_field(False, description="evaluate again, replacing the result")

    @field_validator("dataset")
    @classmethod
    def _canonical_dataset(cls, value: str) -> str:
        """Any spelling of a known dataset (``nsd-synthetic``, ``demo-behaviour``) as its canonical name."""
        return dataset_name(value, known=(*DEMO_DATASETS, *DATASET_CLASSES))

    @property
    def analyses(self) -> list[str]:
        return list(ANALYSES) if self.analysis == "both" else [self.analysis]
