"""The trainer: exact resume, incompatible checkpoints, out-of-memory, mixed precision, metrics per epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visreps.data.images import scan_class_folders
from visreps.errors import VisrepsError
from visreps.models import load
from visreps.training import CheckpointError, Trainer, TrainingError, list_checkpoints, lr_factor, training_labels
from visreps.training.checkpoints import load_checkpoint

from .conftest import tiny_config


class Recorder:
    def __init__(self, stop_after: int | None = None) -> None:
        self.metrics: dict[int, dict[str, float]] = {}
        self.checkpoints: list[int] = []
        self.stop_after = stop_after

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.metrics[epoch] = dict(metrics)

    def on_checkpoint(self, epoch: int, path: Path) -> None:
        self.checkpoints.append(epoch)
        if self.stop_after is not None and epoch == self.stop_after:
            raise KeyboardInterrupt("simulated kill after the checkpoint of epoch %d" % epoch)


def _labels(root: Path):
    return training_labels(scan_class_folders(root))


def test_resumed_run_equals_uninterrupted_run_bitwise(tiny_tree: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_tree)
    labels = _labels(tiny_tree)
    straight = Trainer(config, labels, checkpoint_dir=tmp_path / "straight", callbacks=Recorder()).fit()

    killed = Recorder(stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, labels, checkpoint_dir=tmp_path / "resumed", callbacks=killed).fit()
    assert [epoch for epoch, _ in list_checkpoints(tmp_path / "resumed")] == [0, 1]
    again = Recorder()
    resumed = Trainer(config, labels, checkpoint_dir=tmp_path / "resumed", callbacks=again).fit()

    assert resumed.resumed_from.name == "epoch_001.pt" and resumed.epochs_trained == 1
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.history == [{**entry, "epoch_seconds": resumed.history[i]["epoch_seconds"],
                                "images_per_second": resumed.history[i]["images_per_second"]}
                               if "epoch_seconds" in entry else entry for i, entry in enumerate(straight.history)]
    assert sorted(again.metrics) == [0, 1, 2]  # restored history is re-reported to the new run
    final = load_checkpoint(tmp_path / "resumed" / "epoch_002.pt")
    assert final["epoch"] == 2 and final["metadata"]["K"] == 4


def test_metrics_per_epoch_and_learning(tiny_tree: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_tree, epochs=3, deterministic=False)
    recorder = Recorder()
    result = Trainer(config, _labels(tiny_tree), checkpoint_dir=tmp_path, callbacks=recorder).fit()
    assert set(recorder.metrics[0]) == {"epoch", "heldout_loss", "heldout_accuracy"}
    for epoch in (1, 2, 3):
        metrics = recorder.metrics[epoch]
        assert {"train_loss", "train_accuracy", "heldout_loss", "heldout_accuracy", "lr", "images_per_second"} <= set(metrics)
        assert metrics["lr"] == pytest.approx(2e-3 * lr_factor(epoch - 1, 3, 1))
    assert recorder.metrics[3]["heldout_accuracy"] > 0.5  # 4 colour classes: chance is 0.25
    assert recorder.checkpoints == [0, 1, 2, 3]
    assert [epoch for epoch, _ in list_checkpoints(tmp_path)] == [0, 3]  # older local ones pruned
    loaded = load(tmp_path / "epoch_003.pt")  # a training checkpoint is loadable as a model too
    assert loaded.metadata["epoch"] == 3 and not loaded.model.training
    assert result.metadata["label_source"] == "fine"


def test_incompatible_checkpoint_is_refused(tiny_tree: Path, tmp_path: Path) -> None:
    labels = _labels(tiny_tree)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(tiny_tree), labels, checkpoint_dir=tmp_path, callbacks=Recorder(stop_after=0)).fit()
    other = tiny_config(tiny_tree, lr=1e-3)
    with pytest.raises(CheckpointError, match="lr") as caught:
        Trainer(other, labels, checkpoint_dir=tmp_path).fit()
    assert isinstance(caught.value, VisrepsError)
    coarse = training_labels(scan_class_folders(tiny_tree), num_classes=8)
    with pytest.raises(CheckpointError, match="num_classes"):
        Trainer(tiny_config(tiny_tree), coarse, checkpoint_dir=tmp_path).fit()
    (tmp_path / "epoch_005.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="epoch_005.pt"):
        Trainer(tiny_config(tiny_tree), labels, checkpoint_dir=tmp_path).fit()


def test_out_of_memory_becomes_a_hint_to_lower_the_batch_size(tiny_tree: Path, monkeypatch) -> None:
    trainer = Trainer(tiny_config(tiny_tree, batch_size=64), _labels(tiny_tree))

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(trainer.network, "forward", exhausted)
    with pytest.raises(TrainingError, match=r"batch_size=64.*batch_size=32"):
        trainer.fit(resume=False)

    def cpu_exhausted(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB (out of memory)")

    monkeypatch.setattr(trainer.network, "forward", cpu_exhausted)
    with pytest.raises(TrainingError, match="out of memory"):
        trainer.fit(resume=False)


def test_bf16_autocast_runs_on_cpu_and_fp16_needs_cuda(tiny_tree: Path) -> None:
    config = tiny_config(tiny_tree, epochs=1, amp="bf16", deterministic=False)
    trainer = Trainer(config, _labels(tiny_tree))
    assert trainer.amp_dtype == torch.bfloat16 and trainer.scaler is None
    seen = {}

    def record(module, inputs, output) -> None:
        seen["dtype"] = output.dtype

    handle = trainer.network.conv2.conv.register_forward_hook(record)
    result = trainer.fit(resume=False)
    handle.remove()
    assert seen["dtype"] == torch.bfloat16  # autocast really ran the convolutions in bf16
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert Trainer(tiny_config(tiny_tree, amp="auto"), _labels(tiny_tree)).amp_dtype is None  # fp32 on CPU
    with pytest.raises(TrainingError, match="fp16 needs a CUDA device"):
        Trainer(tiny_config(tiny_tree, amp="fp16"), _labels(tiny_tree))


def test_recipe_pieces_are_in_use(tiny_tree: Path, monkeypatch) -> None:
    """Label smoothing in the loss, AdamW without decay on biases/BN, gradient norms clipped to grad_clip."""
    trainer = Trainer(tiny_config(tiny_tree, epochs=1, lr=0.5, deterministic=False), _labels(tiny_tree))
    assert trainer.criterion.label_smoothing == pytest.approx(0.1)
    assert isinstance(trainer.optimiser, torch.optim.AdamW)
    decay, no_decay = trainer.optimiser.param_groups
    assert decay["weight_decay"] == pytest.approx(1e-3) and no_decay["weight_decay"] == 0.0
    assert id(trainer.network.conv2.conv.bias) in {id(p) for p in no_decay["params"]}
    assert trainer.optimiser.param_groups[0]["lr"] == pytest.approx(0.5 * 0.25)  # warm-up starts at 0.25 lr
    norms: list[tuple[float, float]] = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        before = clip(parameters, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])).item()
        norms.append((float(before), after))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    trainer.fit(resume=False)
    assert len(norms) == len(trainer.train_stream) == 4  # 128 training images in batches of 32
    assert all(after <= 1.0 + 1e-4 for _, after in norms)
    assert any(before > 1.0 for before, _ in norms)  # clipping had something to do


def test_timm_architecture_trains_and_reloads_with_its_points(tiny_tree: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_tree, epochs=1, deterministic=False, model__architecture="timm:test_resnet")
    result = Trainer(config, _labels(tiny_tree), checkpoint_dir=tmp_path).fit()
    assert result.metadata["architecture"] == "timm:test_resnet" and result.metadata["num_classes"] == 4
    loaded = load(tmp_path / "epoch_001.pt")
    assert loaded.points == ["act1", "layer1", "layer2", "layer3", "layer4", "pre_logits", "logits"]
    images = torch.randn(2, 3, 32, 32)
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(images), result.model(images))
