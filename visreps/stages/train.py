"""Train a network from scratch on a label set (docs/method.md §2) and register it, and its untrained state, in MLflow.

Examples:
  visreps train dataset.root=demo --config configs/train/demo.yaml
  visreps train dataset.root=/data/imagenet/train labels.table=runs:/<labels run>/label_tables/k8.parquet \\
      labels.source_name=pca_alexnet seed=1
  torchrun --nproc-per-node 4 -m visreps.cli train dataset.root=... (DDP; see docs/training.md)

A finished run with the same result-affecting config and the same inputs (image tree, label table content) is
re-used unless force=true (docs/reuse.md). A killed run resumes from its newest checkpoint in
<home>/checkpoints/train/<run key>/ when launched again, continuing the same MLflow run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from visreps.data.images import ImageCollection
from visreps.data.listing import class_folder_root, list_class_folders
from visreps.fingerprints import content_fingerprint
from visreps.labels.tables import LABEL_SOURCE_ATTR, collection_fingerprint, read_label_table
from visreps.models import load_file, save_model_file
from visreps.paths import home
from visreps.stages.common import add_config_arguments, stage_config
from visreps.tracking import (
    StageRun, client, download_artifacts, ensure_tracking_available, refuse_if_in_progress, reusable_run, run_key,
    stage_run,
)
from visreps.tracking.registry import (
    EPOCH0_ARTIFACT, MODEL_ARTIFACT, PYTORCH_FLAVOUR_ARTIFACT, ensure_registered, log_model_file,
    log_pytorch_flavour, model_alias, registered_model_name, system_metrics,
)
from visreps.training import TrainConfig, Trainer, TrainingError, TrainingLabels, export_model_file, training_labels
from visreps.training.checkpoints import CHECKPOINT_PATTERN, checkpoint_name, latest_checkpoint
from visreps.training.distributed import (
    DistContext, barrier, broadcast_object, init_distributed, shutdown_distributed,
)

STAGE = "train"
STAGE_VERSION = 1
CONFIG_CLASS = TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = stage_config(TrainConfig, STAGE, args)
    run_id = run_train_stage(config)
    print(f"train: run {run_id}")
    return 0


def checkpoint_folder(key: str) -> Path:
    """Local checkpoints of run key ``key`` (configuration + inputs): ``<home>/checkpoints/train/<key>``."""
    return home() / "checkpoints" / STAGE / key


def dataset_root(config: TrainConfig) -> Path:
    """``dataset.root`` as a folder; ``demo`` is the default demo dataset's ``train_images``."""
    return class_folder_root(config.dataset.root, "dataset.root")


def dataset_name(config: TrainConfig) -> str:
    """Short name of the training images for tags: the root's last two path parts (``imagenet/train``)."""
    root = dataset_root(config)
    return f"{root.parent.name}/{root.name}" if root.parent.name else root.name


@dataclass
class LabelTable:
    """A label table read for training: the rows, its file's content fingerprint, the label source it records."""

    frame: pd.DataFrame
    fingerprint: str
    recorded_source: str


def read_labels_spec(spec: str) -> LabelTable | None:
    """``fine`` -> None (folder classes); a ``runs:/<id>/<path>`` artifact or a local .parquet/.csv -> the table.

    The recorded label source is the labels run's ``visreps.label_source`` tag (``runs:/``) or the table's own
    Parquet metadata (tables written by the labels stage carry it); ``""`` when nothing records one.
    """
    if spec == "fine":
        return None
    recorded = ""
    if spec.startswith("runs:/"):
        body = spec[len("runs:/"):].strip("/")
        if "/" not in body:
            raise TrainingError(f"labels.table={spec!r} names no artifact; use runs:/<run_id>/label_tables/k8.parquet")
        run_id, artifact = body.split("/", 1)
        try:
            local = download_artifacts(run_id, artifact)
            recorded = client().get_run(run_id).data.tags.get("visreps.label_source", "")
        except Exception as error:  # MLflow raises several types for a missing run or artifact
            raise TrainingError(f"cannot fetch labels.table={spec!r}: {str(error).splitlines()[0]}") from None
    else:
        local = Path(spec).expanduser()
    frame = read_label_table(local)
    recorded = recorded or str(frame.attrs.get(LABEL_SOURCE_ATTR, ""))
    return LabelTable(frame, content_fingerprint(local), recorded)


def with_label_source(config: TrainConfig, table: LabelTable | None) -> TrainConfig:
    """``config`` with ``labels.source_name`` checked against (or taken from) what the table records."""
    if table is None:
        return config
    given, recorded = config.labels.source_name, table.recorded_source
    if given and recorded and given != recorded:
        raise TrainingError(
            f"labels.source_name={given!r} disagrees with the label table {config.labels.table}, which was made by "
            f"label source {recorded!r}; pass labels.source_name={recorded} or leave it unset to take it from the table")
    if given:
        return config
    if not recorded:
        raise TrainingError("labels.source_name is not set and the label table records no source; name it "
                            "(e.g. labels.source_name=pca_pixels): it goes into the run tags and the model's alias")
    return config.model_copy(update={"labels": config.labels.model_copy(update={"source_name": recorded})})


@dataclass
class TrainPlan:
    """What rank 0 settles before any training: the resolved config, its inputs, a run to re-use or the table."""

    config: TrainConfig
    inputs: dict[str, str] = field(default_factory=dict)
    reuse_run_id: str | None = None
    table: pd.DataFrame | None = None
    error: str | None = None

    @property
    def run_key(self) -> str:
        return run_key(STAGE, self.config, STAGE_VERSION, self.inputs)

    @property
    def checkpoint_folder(self) -> Path:
        return checkpoint_folder(self.run_key)


def prepare(config: TrainConfig) -> tuple[TrainPlan, ImageCollection]:
    """Rank 0: check the store and the inputs, fingerprint them, find a finished identical run, read the table."""
    ensure_tracking_available()
    root = dataset_root(config)
    if not root.is_dir():
        raise TrainingError(f"dataset.root={config.dataset.root!r}: folder {root} does not exist")
    table = read_labels_spec(config.labels.table)
    config = with_label_source(config, table)
    collection = list_class_folders(root, listing=config.dataset.listing)
    inputs = {"dataset.root": collection_fingerprint(collection)}
    if table is not None:
        inputs["labels.table"] = table.fingerprint
    previous = reusable_run(STAGE, config, STAGE_VERSION, inputs, config.force)
    if previous is not None:
        return TrainPlan(config, inputs, reuse_run_id=previous.run_id), collection
    return TrainPlan(config, inputs, table=None if table is None else table.frame), collection


def _version_tags(config: TrainConfig, labels: TrainingLabels, epoch: int, run_id: str) -> dict[str, Any]:
    return {"K": labels.num_classes, "label_source": config.label_source, "seed": config.seed, "epoch": epoch,
            "architecture": config.model.architecture, "image_size": config.image_size,
            "dataset": dataset_name(config), "run_id": run_id}


def register_models(config: TrainConfig, run_id: str, k: int, tags: dict[str, Any],
                    final_tags: dict[str, Any] | None = None) -> dict[str, str]:
    """Register (or re-point the aliases at) the final and epoch-0 models of run ``run_id``; their URIs.

    ``final_tags`` are added to the final model's version only (e.g. where its MLflow pytorch flavour is).
    """
    name = config.registered_name or registered_model_name(config.model.architecture)
    alias = config.alias or model_alias(k, config.label_source, config.seed)
    uris = {}
    for artifact, this_alias, epoch in ((MODEL_ARTIFACT, alias, config.epochs), (EPOCH0_ARTIFACT, f"{alias}-epoch0", 0)):
        extra = (final_tags or {}) if artifact == MODEL_ARTIFACT else {}
        version = ensure_registered(run_id, artifact, name, this_alias, {**tags, **extra, "epoch": epoch})
        uris[artifact] = f"models:/{name}@{this_alias}"
        uris[f"{artifact}_version"] = str(version.version)
    return uris


class _RunLogger:
    """Trainer callbacks: per-epoch metrics and checkpoints into the MLflow run.

    ``logged_through``: epochs up to this one are already in the run (a continued run resumed from that
    checkpoint), so the trainer's replay of the checkpoint's history is not logged twice.
    """

    def __init__(self, run: StageRun, log_checkpoints: bool, logged_through: int = -1,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> None:
        self.run = run
        self.log_checkpoints = log_checkpoints
        self.logged_through = logged_through
        self.on_epoch = on_epoch
        self.logged: set[int] = set()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch > self.logged_through:
            self.run.log_metrics({key: value for key, value in metrics.items() if key != "epoch"}, step=epoch)
        if self.on_epoch is not None:  # e.g. a sweep's pruner; may raise TrainingStopped
            self.on_epoch(epoch, metrics)

    def on_checkpoint(self, epoch: int, path: Path) -> None:
        if self.log_checkpoints:
            self.run.log_artifact(path, "checkpoints")
            self.logged.add(epoch)


def _log_results(run: StageRun, config: TrainConfig, labels: TrainingLabels, result, folder: Path,
                 logger: _RunLogger) -> dict[str, str]:
    """Model files, history, class counts, registration; returns the model URIs."""
    flavour: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        final_file = save_model_file(Path(scratch) / "final.pt", result.model,
                                     {**result.metadata, "run_id": run.run_id})
        log_model_file(run, final_file, MODEL_ARTIFACT)
        if config.log_pytorch_model:  # rebuilt from the file: plain CPU module in eval mode, no wrappers
            final = load_file(final_file)
            flavour[PYTORCH_FLAVOUR_ARTIFACT] = log_pytorch_flavour(run, final.model, final.metadata)
        epoch0_file = export_model_file(folder / checkpoint_name(0), Path(scratch) / "epoch0.pt")
        log_model_file(run, epoch0_file, EPOCH0_ARTIFACT)
    if config.log_checkpoints:
        for epoch in (0, config.epochs):
            if epoch not in logger.logged and (folder / checkpoint_name(epoch)).is_file():
                run.log_artifact(folder / checkpoint_name(epoch), "checkpoints")
    run.log_table(pd.DataFrame(result.history), "training_history.csv")
    counts = {"train": labels.class_counts(labels.train_indices).tolist(),
              "heldout": labels.class_counts(labels.heldout_indices).tolist()}
    run.log_dict(counts, "class_counts.json")
    last = result.history[-1]
    summary = {f"final_{key}": value for key, value in last.items() if key.startswith(("heldout", "train_"))}
    summary["train_seconds"] = result.seconds
    run.log_metrics(summary, step=config.epochs)
    uris: dict[str, str] = dict(flavour)
    if flavour:
        run.set_tags({"visreps.mlflow_model_uri": flavour[PYTORCH_FLAVOUR_ARTIFACT]})
    if config.register:
        uris.update(register_models(config, run.run_id, labels.num_classes,
                                    _version_tags(config, labels, config.epochs, run.run_id),
                                    {"mlflow_model": flavour[PYTORCH_FLAVOUR_ARTIFACT]} if flavour else None))
        run.set_tags({"visreps.model_uri": uris[MODEL_ARTIFACT], "visreps.model_uri_epoch0": uris[EPOCH0_ARTIFACT]})
    run.log_text(json.dumps(uris, indent=2), "registered_models.json")
    return uris


def _train(config: TrainConfig, labels: TrainingLabels, context: DistContext, run: StageRun | None,
           folder: Path, logged_through: int = -1, on_epoch: Callable | None = None) -> Trainer:
    logger = _RunLogger(run, config.log_checkpoints, logged_through, on_epoch) if run is not None else None
    trainer = Trainer(config, labels, context=context, checkpoint_dir=folder, callbacks=logger)
    if run is not None:  # runtime only, like every speed knob: a tag, not a parameter
        run.set_tags({"visreps.image_source": trainer.image_source})
    result = trainer.fit()
    if run is not None:
        if result.resumed_from is not None:
            run.set_tags({"visreps.resumed_from": str(result.resumed_from)})
        _log_results(run, config, labels, result, folder, logger)
    return trainer


def run_train_stage(config: TrainConfig, parent_run_id: str | None = None,
                    on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> str:
    """Train (or re-use) the network of ``config``; returns the MLflow run id. Works under torchrun too.

    ``on_epoch(epoch, metrics)`` is called after each epoch's metrics are logged (rank 0); raising
    ``TrainingStopped`` there ends the run as FAILED with that reason (a pruned sweep trial).
    """
    context = init_distributed(config.device)
    try:
        return _run_stage(config, parent_run_id, context, on_epoch)
    finally:
        shutdown_distributed(context)


def _checkpoint_epoch(path: Path | None) -> int:
    match = CHECKPOINT_PATTERN.match(path.name) if path is not None else None
    return int(match.group(1)) if match else -1


def _run_stage(config: TrainConfig, parent_run_id: str | None, context: DistContext,
               on_epoch: Callable | None = None) -> str:
    plan, collection = None, None
    if context.is_main:
        try:
            plan, collection = prepare(config)
        except Exception as error:
            if not context.enabled:
                raise
            broadcast_object(context, TrainPlan(config, error=f"{type(error).__name__}: {error}"))
            raise
    plan = broadcast_object(context, plan)
    if plan.error is not None:
        raise TrainingError(f"rank 0 could not prepare the run: {plan.error}")
    config = plan.config
    if plan.reuse_run_id is not None:
        if context.is_main and config.register:
            _reuse(config, plan.reuse_run_id)
        return plan.reuse_run_id
    if collection is None:  # ranks other than 0 list the images themselves
        collection = list_class_folders(dataset_root(config), listing="trust")  # the listing rank 0 stored
    labels = training_labels(
        collection, plan.table, table_name=config.labels.table, num_classes=config.labels.num_classes,
        heldout_fraction=config.dataset.heldout_fraction, split_seed=config.dataset.split_seed,
        allow_unlabelled=config.labels.allow_unlabelled,
    )
    folder = plan.checkpoint_folder
    if config.force and context.is_main and folder.exists():
        refuse_if_in_progress(STAGE, config, STAGE_VERSION, plan.inputs)  # never delete a live run's checkpoints
        shutil.rmtree(folder)
    barrier(context)
    if not context.is_main:
        _train(config, labels, context, None, folder)
        return str(broadcast_object(context, None))
    tags = {
        "visreps.dataset": dataset_name(config),
        "visreps.label_source": config.label_source,
        "visreps.K": labels.num_classes,
        "visreps.seed": config.seed,
        "visreps.architecture": config.model.architecture,
        "visreps.data_fingerprint": plan.inputs["dataset.root"],
        "visreps.labels_fingerprint": labels.fingerprint,
        "visreps.world_size": context.world_size,
        "visreps.device": str(context.device),
    }
    run_name = f"train-{config.model.architecture}-k{labels.num_classes}-{config.label_source}-s{config.seed}"
    checkpoint = latest_checkpoint(folder)
    with stage_run(STAGE, config, STAGE_VERSION, tags=tags, run_name=run_name, parent_run_id=parent_run_id,
                   inputs=plan.inputs, resume=checkpoint is not None) as run:
        if checkpoint is not None:
            print(f"train: resuming from checkpoint {checkpoint} (epoch {_checkpoint_epoch(checkpoint)} of "
                  f"{config.epochs}); " + (f"continuing run {run.run_id}" if run.continued else f"run {run.run_id}"))
        run.log_params({"resolved.K": labels.num_classes, "resolved.image_size": config.image_size,
                        "resolved.n_train": len(labels.train_indices), "resolved.n_heldout": len(labels.heldout_indices),
                        "resolved.dataset_root": str(collection.root)})
        with system_metrics(run.run_id, config.system_metrics):
            _train(config, labels, context, run, folder, _checkpoint_epoch(checkpoint) if run.continued else -1,
                   on_epoch)
    if config.log_checkpoints and folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    broadcast_object(context, run.run_id)
    return run.run_id


def _reuse(config: TrainConfig, run_id: str) -> None:
    """Make sure a re-used run's models are registered and the aliases point at them."""
    tags = client().get_run(run_id).data.tags
    k = int(tags.get("visreps.K", "0"))
    version_tags = {"K": k, "label_source": config.label_source, "seed": config.seed,
                    "architecture": config.model.architecture, "image_size": config.image_size,
                    "dataset": tags.get("visreps.dataset", ""), "run_id": run_id}
    register_models(config, run_id, k, version_tags)
