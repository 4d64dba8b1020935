"""Labels of an image folder end to end (no tracking): pixel features against a numpy computation, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from visreps.data.base import DatasetError
from visreps.data.images import ImageCollection, load_rgb, scan_class_folders, train_heldout_split
from visreps.labels import LabelError, PixelSource, derive_coarse_labels, fix_signs
from visreps.labels.outputs import write_label_outputs


def heldout_mask(n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[train_heldout_split(n, 0.2, 42)[1]] = True
    return mask


def numpy_pixel_labels(collection, source, heldout, n_bits) -> np.ndarray:
    x = np.stack([source.features(source.transform(load_rgb(collection.path(i)))[None])[0].numpy()
                  for i in range(len(collection))]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fit = x[~heldout]
    values, vectors = np.linalg.eigh(np.cov(fit, rowvar=False))
    components = fix_signs(vectors[:, np.argsort(values)[::-1][:n_bits]].T)
    projections = (x - fit.mean(axis=0)) @ components.T
    bits = projections > np.median(projections[~heldout], axis=0)
    return bits.astype(np.int64) @ (2 ** np.arange(n_bits - 1, -1, -1))


def test_pixel_labels_of_an_image_folder_equal_numpy(image_tree) -> None:
    collection = scan_class_folders(image_tree)
    heldout = heldout_mask(len(collection))
    source = PixelSource(size=4)
    result = derive_coarse_labels(collection, source, heldout, [2, 4, 8], batch_size=7, progress=False)
    np.testing.assert_array_equal(result.labels[8], numpy_pixel_labels(collection, source, heldout, 3))
    assert result.keys == list(collection.keys)
    assert (result.split == "heldout").sum() == 8 and result.fit.sum() == 32
    assert all(result.nesting.values())
    assert np.bincount(result.labels[2][result.fit]).tolist() == [16, 16]
    workers = derive_coarse_labels(collection, source, heldout, [2, 4, 8], batch_size=5, num_workers=2, progress=False)
    np.testing.assert_array_equal(workers.labels[8], result.labels[8])


def test_fit_split_all_uses_every_image(image_tree) -> None:
    collection = scan_class_folders(image_tree)
    heldout = heldout_mask(len(collection))
    result = derive_coarse_labels(collection, PixelSource(4), heldout, [4], fit_split="all", progress=False)
    assert result.fit.all() and result.pca.n_samples == 40
    np.testing.assert_array_equal(result.labels[4], numpy_pixel_labels(collection, PixelSource(4), np.zeros(40, bool), 2))


def test_corrupt_image_fails_or_is_skipped(image_tree, tmp_path) -> None:
    (image_tree / "class1" / "img03.png").write_bytes(b"not an image")
    collection = scan_class_folders(image_tree)
    heldout = heldout_mask(len(collection))
    with pytest.raises(DatasetError, match="class1/img03.png is corrupt.*on_corrupt_image=skip"):
        derive_coarse_labels(collection, PixelSource(4), heldout, [2, 4], progress=False)
    result = derive_coarse_labels(collection, PixelSource(4), heldout, [2, 4], on_corrupt="skip", batch_size=4,
                                  progress=False)
    assert list(result.skipped) == ["class1/img03.png"] and len(result.positions) == 39
    assert "class1/img03.png" not in result.keys
    summary = write_label_outputs(result, tmp_path / "out", figures=True)
    assert summary["n_skipped"] == 1 and summary["n_images"] == 39
    assert "class1/img03.png" in (tmp_path / "out" / "skipped_images.json").read_text()


def test_duplicate_keys_too_many_pcs_and_bad_masks_are_refused(image_tree) -> None:
    collection = scan_class_folders(image_tree)
    duplicated = ImageCollection(collection.root, collection.keys[:3] + collection.keys[:1],
                                 collection.fine_labels[:4], collection.class_names)
    with pytest.raises(LabelError, match="more than once.*class0/img00.png"):
        derive_coarse_labels(duplicated, PixelSource(4), np.zeros(4, bool), [2], progress=False)
    with pytest.raises(LabelError, match="more principal components than the 3 feature dimensions"):
        derive_coarse_labels(collection, PixelSource(1), np.zeros(40, bool), [16], progress=False)
    with pytest.raises(LabelError, match="needs at least 9 fit images"):
        derive_coarse_labels(scan_class_folders(image_tree), PixelSource(4), np.arange(40) >= 5, [256],
                             progress=False)
    with pytest.raises(LabelError, match="heldout mask has shape"):
        derive_coarse_labels(collection, PixelSource(4), np.zeros(3, bool), [2], progress=False)
