"""Labels matched to images (and the errors for bad tables), the split, and the batch streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from visreps.config import ConfigError
from visreps.data.images import scan_class_folders, train_heldout_split
from visreps.errors import VisrepsError
from visreps.training import BatchStream, TrainConfig, decode_all, training_labels
from visreps.training.data import DecodedImages, infer_num_classes


def _table(collection, labels, with_split=True, heldout_fraction=0.2, seed=42) -> pd.DataFrame:
    _, heldout = train_heldout_split(len(collection), heldout_fraction, seed)
    split = np.array(["train"] * len(collection), dtype=object)
    split[heldout] = "heldout"
    table = pd.DataFrame({"image": list(collection.keys), "label": labels})
    if with_split:
        table["split"] = split
    return table


def test_fine_labels_and_split(tiny_tree: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    labels = training_labels(collection)
    assert labels.num_classes == 4
    train, heldout = train_heldout_split(len(collection), 0.2, 42)
    assert np.array_equal(labels.train_indices, train) and np.array_equal(labels.heldout_indices, heldout)
    assert len(heldout) == 32 and labels.class_counts(labels.train_indices).sum() == 128


def test_table_labels_are_matched_by_path(tiny_tree: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    coarse = collection.fine_labels // 2
    shuffled = _table(collection, coarse).sample(frac=1.0, random_state=0)  # row order must not matter
    labels = training_labels(collection, shuffled, table_name="runs:/abc/label_tables/k2.parquet")
    assert labels.num_classes == 2
    assert np.array_equal(labels.labels, coarse)


@pytest.mark.parametrize("name,expected", [("label_tables/k8.parquet", 8), ("/x/K32.csv", 32), ("fine.parquet", 4)])
def test_k_from_table_name(name: str, expected: int) -> None:
    assert infer_num_classes(name, np.array([0, 3, 1])) == expected


def test_label_at_or_above_k_is_an_error(tiny_tree: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    with pytest.raises(VisrepsError, match="label 3 but K=2"):
        training_labels(collection, _table(collection, collection.fine_labels), table_name="k2.parquet")


def test_images_missing_from_the_dataset_are_an_error(tiny_tree: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    table = _table(collection, collection.fine_labels // 2)
    table.loc[0, "image"] = "class_0/not_there.png"
    with pytest.raises(VisrepsError, match="not in the dataset"):
        training_labels(collection, table, table_name="k2.parquet")
    with pytest.raises(VisrepsError, match="have no label"):
        training_labels(collection, _table(collection, collection.fine_labels // 2).iloc[5:], table_name="k2.parquet")


def test_unlabelled_images_can_be_left_out_explicitly(tiny_tree: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    table = _table(collection, collection.fine_labels // 2).iloc[10:]
    labels = training_labels(collection, table, table_name="k2.parquet", allow_unlabelled=True)
    assert len(labels.train_indices) + len(labels.heldout_indices) == len(collection) - 10
    assert (labels.labels[labels.train_indices] >= 0).all()


def test_k_of_one_is_an_error(tiny_tree: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    with pytest.raises(VisrepsError, match="K >= 2"):
        training_labels(collection, _table(collection, np.zeros(len(collection), dtype=int)), table_name="labels.csv")
    with pytest.raises(ConfigError, match="labels.num_classes.*K=1: a classifier needs K >= 2"):
        from visreps.config import load_config

        load_config(TrainConfig, "train", overrides=["labels.num_classes=1"])


def test_split_column_must_agree_with_the_training_split(tiny_tree: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    table = _table(collection, collection.fine_labels // 2, seed=7)
    with pytest.raises(VisrepsError, match="split column differs"):
        training_labels(collection, table, table_name="k2.parquet")
    assert training_labels(collection, table, table_name="k2.parquet", split_seed=7).num_classes == 2


def test_memory_and_file_streams_give_identical_batches(tiny_tree: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    labels = training_labels(collection)
    paths = [collection.root / key for key in collection.keys]
    images = decode_all(paths, 32, progress=False)
    assert images.shape == (160, 3, 32, 32) and images.dtype == torch.uint8
    cpu = torch.device("cpu")
    memory = BatchStream(labels.train_indices, labels.labels, 50, cpu, images=images, shuffle=True, seed=3)
    files = BatchStream(labels.train_indices, labels.labels, 50, cpu, files=DecodedImages(paths, labels.labels, 32),
                        shuffle=True, seed=3)
    for epoch in (0, 1):
        memory.set_epoch(epoch)
        files.set_epoch(epoch)
        pairs = list(zip(memory, files, strict=True))
        assert len(pairs) == 3  # 128 images: 50 + 50 + 28
        for (a_images, a_labels), (b_images, b_labels) in pairs:
            assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    memory.set_epoch(0)
    first = torch.cat([batch for _, batch in memory])
    memory.set_epoch(1)
    assert not torch.equal(first, torch.cat([batch for _, batch in memory]))  # a new order each epoch


def test_streams_shard_across_ranks_and_drop_single_image_batches(tiny_tree: Path) -> None:
    collection = scan_class_folders(tiny_tree)
    labels = training_labels(collection)
    images = decode_all([collection.root / key for key in collection.keys], 32, progress=False)
    cpu = torch.device("cpu")
    heldout = [BatchStream(labels.heldout_indices, labels.labels, 8, cpu, images=images, rank=r, world_size=3)
               for r in range(3)]
    seen = torch.cat([img.flatten(1) for stream in heldout for img, _ in stream])
    assert seen.shape[0] == len(labels.heldout_indices)  # no padding, no duplicates in evaluation
    train = [BatchStream(labels.train_indices, labels.labels, 64, cpu, images=images, shuffle=True, seed=1,
                         rank=r, world_size=2) for r in range(2)]
    assert [len(stream) for stream in train] == [1, 1]
    odd = BatchStream(labels.train_indices[:65], labels.labels, 64, cpu, images=images, shuffle=True)
    assert [len(batch) for _, batch in odd] == [64]
