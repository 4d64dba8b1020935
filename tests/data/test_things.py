"""THINGS behaviour reader: embedding rows aligned with concept ids, seeded 20/80 split, concept images."""

from __future__ import annotations

import numpy as np
import pytest

from visreps.data import DatasetError, open_dataset
from visreps.data.base import concept_split

try:
    from .published_fixtures import build_things, visreps_home  # noqa: F401
except ImportError:
    from published_fixtures import build_things, visreps_home  # noqa: F401


@pytest.fixture()
def things(tmp_path):
    root = tmp_path / "things"
    return root, build_things(root)


def test_split_sizes_of_the_study():
    names = [f"concept{i}" for i in range(1854)]  # file order, not sorted: the split follows positions
    selection, evaluation = (np.array([names.index(n) for n in part]) for part in concept_split(names))
    assert (selection.size, evaluation.size) == (370, 1484)
    permutation = np.random.default_rng(42).permutation(1854)
    np.testing.assert_array_equal(selection, np.sort(permutation[:370]))
    assert np.intersect1d(selection, evaluation).size == 0
    assert concept_split(names, seed=1)[0] != concept_split(names)[0]


def test_embedding_rows_follow_concepts(things):
    root, truth = things
    dataset = open_dataset("things", root)
    assert dataset.kind == "behaviour" and dataset.subjects() == ["group"] and dataset.regions() == ["behaviour"]
    r = dataset.responses("group", "behaviour")
    permutation = np.random.default_rng(42).permutation(20)
    selection, evaluation = np.sort(permutation[:4]), np.sort(permutation[4:])
    assert list(r.train_ids) == [truth["concepts"][i] for i in selection]
    assert list(r.test_ids) == [truth["concepts"][i] for i in evaluation]
    np.testing.assert_allclose(r.train, truth["embedding"][selection], atol=1e-6)
    np.testing.assert_allclose(r.test, truth["embedding"][evaluation], atol=1e-6)
    assert r.n_units == 66 and r.noise_ceiling is None
    assert dataset.stimulus_ids() == truth["concepts"]


def test_concept_images(things):
    root, truth = things
    dataset = open_dataset("things", root)
    assert dataset.stimulus_images("air_conditioner") == truth["stems"]["air_conditioner"]
    image = dataset.load_image(truth["stems"]["acorn"][0])
    assert image.mode == "RGB" and image.size == (8, 8)
    with pytest.raises(DatasetError, match="use stimulus_images"):
        dataset.load_image("acorn")
    with pytest.raises(DatasetError, match="unknown subject"):
        dataset.responses("subj01", "behaviour")


def test_bad_input(things):
    root, truth = things
    (root / "unique_id.txt").write_text("\n".join(truth["concepts"][:-1] + ["zebra"]) + "\n")
    with pytest.raises(DatasetError, match="no image folder .* e.g. 'zebra'"):
        open_dataset("things", root)
    (root / "unique_id.txt").write_text("\n".join(truth["concepts"][:-1]) + "\n")
    with pytest.raises(DatasetError, match="20 rows but .* lists 19 concepts"):
        open_dataset("things", root)
    (root / "unique_id.txt").write_text("\n".join(truth["concepts"]) + "\n")
    (root / "spose_embedding_66d_sorted.txt").write_text("dim1 dim2\n0.1 0.2\n")
    with pytest.raises(DatasetError, match="not a whitespace-separated number table"):
        open_dataset("things", root)
    (root / "spose_embedding_66d_sorted.txt").unlink()
    with pytest.raises(DatasetError, match="missing file spose_embedding_66d_sorted.txt"):
        open_dataset("things", root)
