"""Label tables: building, reading, validating against the image collection, fingerprints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from visreps.data.images import ImageCollection, scan_class_folders
from visreps.labels import (
    LabelError,
    build_label_table,
    collection_fingerprint,
    label_table_artifact,
    read_label_table,
    subset_collection,
    validate_label_table,
)


@pytest.fixture
def collection(image_tree):
    return scan_class_folders(image_tree)


def full_table(collection, labels=None) -> pd.DataFrame:
    labels = np.arange(len(collection)) % 4 if labels is None else labels
    return build_label_table(collection.keys, labels, ["train"] * len(collection))


def test_valid_table_is_returned_in_collection_order(collection) -> None:
    table = full_table(collection).sample(frac=1.0, random_state=0)  # any row order
    aligned = validate_label_table(table, collection, num_classes=4)
    np.testing.assert_array_equal(aligned, np.arange(len(collection)) % 4)


def test_table_naming_images_outside_the_dataset_is_refused(collection) -> None:
    table = full_table(collection)
    table.loc[0, "image"] = "class9/not_there.png"
    with pytest.raises(LabelError, match="not in the dataset.*class9/not_there.png"):
        validate_label_table(table, collection)


def test_table_missing_images_is_refused_unless_allowed(collection) -> None:
    table = full_table(collection).iloc[1:]
    with pytest.raises(LabelError, match="1 image\\(s\\) of the dataset .* have no label.*class0/img00.png"):
        validate_label_table(table, collection)
    aligned = validate_label_table(table, collection, allow_missing=True)
    assert aligned[0] == -1 and (aligned[1:] >= 0).all()


def test_duplicate_image_keys_are_refused(collection) -> None:
    table = full_table(collection)
    table.loc[1, "image"] = table.loc[0, "image"]
    with pytest.raises(LabelError, match="more than once.*class0/img00.png"):
        validate_label_table(table, collection)
    with pytest.raises(LabelError, match="more than once"):
        build_label_table(["a.png", "a.png"], [0, 1], ["train", "train"])


@pytest.mark.parametrize("labels, message", [
    ("negative", "negative label"),
    ("too_big", "label 4 but K=4"),
    ("fraction", "non-integer"),
])
def test_bad_label_values_are_refused(collection, labels, message) -> None:
    table = full_table(collection)
    if labels == "negative":
        table.loc[3, "label"] = -1
    elif labels == "too_big":
        table.loc[3, "label"] = 4
    else:
        table["label"] = table["label"].astype(float)
        table.loc[3, "label"] = 0.5
    with pytest.raises(LabelError, match=message):
        validate_label_table(table, collection, num_classes=4)


def test_missing_columns_are_refused(collection) -> None:
    with pytest.raises(LabelError, match="lacks column"):
        validate_label_table(full_table(collection).drop(columns="label"), collection)


def test_tables_round_trip_through_parquet_and_csv(collection, tmp_path) -> None:
    table = full_table(collection)
    table.to_parquet(tmp_path / "k4.parquet", index=False)
    table.to_csv(tmp_path / "k4.csv", index=False)
    for name in ("k4.parquet", "k4.csv"):
        back = read_label_table(tmp_path / name)
        pd.testing.assert_frame_equal(back, table, check_dtype=False)
    with pytest.raises(LabelError, match="does not exist"):
        read_label_table(tmp_path / "k8.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(LabelError, match="cannot be read"):
        read_label_table(tmp_path / "bad.parquet")


def test_artifact_paths() -> None:
    assert label_table_artifact(8) == "label_tables/k8.parquet"
    assert label_table_artifact("fine", "csv") == "label_tables/fine.csv"


def test_fingerprint_changes_with_files(collection, image_tree) -> None:
    before = collection_fingerprint(collection)
    assert collection_fingerprint(scan_class_folders(image_tree)) == before
    with open(image_tree / collection.keys[0], "ab") as handle:
        handle.write(b"\0")
    assert collection_fingerprint(collection) == before  # the stats taken when it was listed
    assert collection_fingerprint(scan_class_folders(image_tree)) != before
    assert collection_fingerprint(subset_collection(collection, np.arange(5))) != before
    unlisted = ImageCollection(collection.root, collection.keys, collection.fine_labels, collection.class_names)
    assert collection_fingerprint(unlisted) == collection_fingerprint(scan_class_folders(image_tree))
