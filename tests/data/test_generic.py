"""The generic dataset format: writer/reader round trips and one clear DatasetError per kind of bad input."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from visreps.data import open_dataset
from visreps.data.base import DatasetError, concept_split
from visreps.data.generic.reader import GenericDataset
from visreps.data.generic.writer import (
    save_npz, write_behaviour_dataset, write_manifest, write_neural_dataset, write_neural_responses,
)

N_TRAIN, N_TEST, N_UNITS, N_REPS = 12, 6, 5, 3


def _write_images(root: Path, ids: list[str], folder: str = "images") -> list[str]:
    paths = []
    for k, stimulus in enumerate(ids):
        path = f"{folder}/{stimulus}.png"
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 10, 3), k * 7 % 255, dtype=np.uint8)).save(root / path)
        paths.append(path)
    return paths


def _neural_arrays(rng: np.random.Generator, train_ids: list[str], test_ids: list[str]) -> dict:
    train_reps = rng.standard_normal((len(train_ids), N_REPS, N_UNITS)).astype(np.float32)
    test_reps = rng.standard_normal((len(test_ids), N_REPS, N_UNITS)).astype(np.float32)
    test_reps[0, 2] = np.nan  # stimulus shown only twice: NaN padding is allowed
    return {
        "train_ids": train_ids, "test_ids": test_ids,
        "train": train_reps.mean(axis=1), "test": np.nanmean(test_reps, axis=1),
        "train_repetitions": train_reps, "test_repetitions": test_reps,
        "noise_ceiling": np.linspace(0.1, 0.9, N_UNITS),
    }


@pytest.fixture
def neural_root(tmp_path: Path) -> Path:
    """A valid neural dataset: 2 subjects x 2 regions, 18 stimuli, repetitions, noise ceilings."""
    root = tmp_path / "neural"
    ids = [f"s{i:03d}" for i in range(N_TRAIN + N_TEST)]
    paths = _write_images(root, ids)
    rng = np.random.default_rng(0)
    responses = {
        (subject, region): _neural_arrays(rng, ids[:N_TRAIN], ids[N_TRAIN:])
        for subject in ("sub-01", "sub-02") for region in ("V1", "IT")
    }
    responses[("sub-01", "V1")]["info"] = {"voxel_xyz": np.arange(N_UNITS * 3).reshape(N_UNITS, 3)}
    write_neural_dataset(root, name="toy", stimuli={"stimulus_id": ids, "image": paths, "category": ["a", "b"] * 9},
                         responses=responses, description="toy data")
    return root


def _npz(root: Path, subject: str = "sub-01", region: str = "V1") -> Path:
    return root / "responses" / subject / f"{region}.npz"


def _rewrite(root: Path, **changes) -> None:
    """Replace arrays of sub-01/V1 with np.savez (the plain numpy writer users will use)."""
    path = _npz(root)
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    arrays = {name: value for name, value in arrays.items() if value is not None}
    path.unlink()
    np.savez(path, **arrays)


def test_neural_round_trip(neural_root: Path) -> None:
    dataset = open_dataset("generic", neural_root)
    assert isinstance(dataset, GenericDataset)
    assert dataset.name == "toy" and dataset.kind == "neural" and not dataset.test_only
    assert dataset.subjects() == ["sub-01", "sub-02"]
    assert dataset.regions() == ["V1", "IT"] and dataset.regions("sub-02") == ["V1", "IT"]
    assert dataset.stimulus_ids() == [f"s{i:03d}" for i in range(N_TRAIN + N_TEST)]
    assert dataset.stimulus_images("s003") == ["s003"]
    image = dataset.load_image("s003")
    assert image.mode == "RGB" and image.size == (10, 8)
    assert np.asarray(image)[0, 0, 0] == 21

    ids = dataset.stimulus_ids()
    expected = _neural_arrays(np.random.default_rng(0), ids[:N_TRAIN], ids[N_TRAIN:])
    responses = dataset.responses("sub-01", "V1")
    assert responses.train.dtype == np.float32 and responses.train.shape == (N_TRAIN, N_UNITS)
    np.testing.assert_array_equal(responses.train_ids, expected["train_ids"])
    np.testing.assert_array_equal(responses.test_ids, expected["test_ids"])
    np.testing.assert_array_equal(responses.train, expected["train"])
    np.testing.assert_array_equal(responses.test, expected["test"])
    np.testing.assert_array_equal(responses.test_repetitions, expected["test_repetitions"])
    assert np.isnan(responses.test_repetitions[0, 2]).all()
    np.testing.assert_allclose(responses.noise_ceiling, expected["noise_ceiling"], rtol=1e-6)
    assert responses.info["dropped_units"] == []
    np.testing.assert_array_equal(responses.info["voxel_xyz"], np.arange(N_UNITS * 3).reshape(N_UNITS, 3))
    assert dataset.summary()["subjects"]["sub-02"]["IT"] == {"n_units": N_UNITS, "n_train": N_TRAIN,
                                                            "n_test": N_TEST, "n_repetitions": N_REPS}
    table = dataset.stimulus_table()
    assert list(table.columns) == ["stimulus_id", "image", "category"]


def test_plain_numpy_savez_and_compressed_files_are_read(neural_root: Path) -> None:
    _rewrite(neural_root)  # np.savez
    assert GenericDataset(neural_root).responses("sub-01", "V1").n_units == N_UNITS
    path = _npz(neural_root, "sub-02", "IT")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    np.savez_compressed(path, **arrays)
    np.testing.assert_array_equal(GenericDataset(neural_root).responses("sub-02", "IT").train, arrays["train"])


def test_regions_may_differ_between_subjects(tmp_path: Path) -> None:
    ids = [f"s{i}" for i in range(8)]
    paths = _write_images(tmp_path, ids)
    rng = np.random.default_rng(1)

    def arrays() -> dict:
        return {"train_ids": ids[:5], "test_ids": ids[5:], "train": rng.random((5, 2)), "test": rng.random((3, 2))}

    dataset = write_neural_dataset(tmp_path, name="x", stimuli={"stimulus_id": ids, "image": paths},
                                   responses={("a", "V1"): arrays(), ("a", "V4"): arrays(), ("b", "V1"): arrays()})
    assert dataset.regions("a") == ["V1", "V4"] and dataset.regions("b") == ["V1"]
    assert dataset.regions() == ["V1", "V4"]
    with pytest.raises(DatasetError, match="unknown region 'V4' for subject 'b'"):
        dataset.responses("b", "V4")


def test_save_npz_is_byte_identical_and_loadable(tmp_path: Path) -> None:
    arrays = {"ids": np.asarray(["a", "bb"]), "x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    first, second = save_npz(tmp_path / "a.npz", arrays), save_npz(tmp_path / "b.npz", arrays)
    assert first.read_bytes() == second.read_bytes()
    with np.load(first, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["x"], arrays["x"])
        assert data["ids"].tolist() == ["a", "bb"]
    with pytest.raises(DatasetError, match="Python objects"):
        save_npz(tmp_path / "c.npz", {"ids": np.asarray(["a", 1], dtype=object)})


@pytest.fixture
def behaviour_root(tmp_path: Path) -> Path:
    root = tmp_path / "behaviour"
    concepts = [f"concept{c:02d}" for c in range(10)]
    image_ids = [f"{c}_{k}" for c in concepts for k in range(3)]
    paths = _write_images(root, image_ids)
    embedding = np.abs(np.random.default_rng(2).standard_normal((10, 4))).astype(np.float32)
    write_behaviour_dataset(root, name="toy-behaviour", concepts=concepts, embedding=embedding,
                            stimuli={"stimulus_id": image_ids, "image": paths, "concept": [i[:9] for i in image_ids]},
                            selection_fraction=0.3, split_seed=7)
    return root


def test_behaviour_round_trip(behaviour_root: Path) -> None:
    dataset = open_dataset("generic", behaviour_root)
    assert dataset.kind == "behaviour"
    concepts = [f"concept{c:02d}" for c in range(10)]
    assert dataset.stimulus_ids() == concepts
    assert dataset.stimulus_images("concept04") == ["concept04_0", "concept04_1", "concept04_2"]
    assert dataset.load_image("concept04_1").size == (10, 8)
    responses = dataset.responses("group", "behaviour")
    selection, evaluation = concept_split(concepts, 0.3, 7)
    assert responses.train_ids.tolist() == selection and responses.test_ids.tolist() == evaluation
    assert len(selection) == 3 and sorted(selection + evaluation) == concepts
    embedding = np.abs(np.random.default_rng(2).standard_normal((10, 4))).astype(np.float32)
    np.testing.assert_array_equal(responses.train, embedding[[concepts.index(c) for c in selection]])
    np.testing.assert_array_equal(responses.test, embedding[[concepts.index(c) for c in evaluation]])
    manifest = yaml.safe_load((behaviour_root / "visreps_dataset.yaml").read_text())
    assert manifest["selection_fraction"] == 0.3 and manifest["split_seed"] == 7
    with pytest.raises(DatasetError, match="unknown concept"):
        dataset.stimulus_images("nope")


def test_concept_split_is_seeded() -> None:
    concepts = [f"c{i:04d}" for i in range(1854)]
    selection, evaluation = concept_split(concepts, 0.2, 42)
    assert len(selection) == 370 and len(evaluation) == 1484  # the THINGS sizes
    assert selection == [concepts[i] for i in np.sort(np.random.default_rng(42).permutation(1854)[:370])]
    assert concept_split(concepts, 0.2, 43)[0] != selection
    with pytest.raises(DatasetError, match="selection_fraction"):
        concept_split(concepts, 1.0, 42)


# ---------------------------------------------------------------- bad input


def _manifest(root: Path) -> dict:
    return yaml.safe_load((root / "visreps_dataset.yaml").read_text())


def _write_manifest_dict(root: Path, manifest: dict) -> None:
    (root / "visreps_dataset.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other"}, "format must be 'visreps-dataset'"),
        ({"format_version": 99}, "format_version 99 is not supported"),
        ({"kind": "spikes"}, "kind must be 'neural' or 'behaviour'"),
        ({"subjects": []}, "subjects must be a non-empty list"),
        ({"subjects": ["sub-01", "sub-01"]}, "subjects are listed twice: sub-01"),
        ({"regions": {"sub-01": ["V1"]}}, "one entry per subject"),
        ({"responses": "responses/{subject}.npz"}, "with {subject} and {region}"),
        ({"respones": "x"}, "unknown keys respones"),
        ({"name": None}, "name must be a non-empty string"),
    ],
)
def test_bad_manifest_values(neural_root: Path, change: dict, message: str) -> None:
    manifest = _manifest(neural_root)
    manifest.update(change)
    _write_manifest_dict(neural_root, manifest)
    with pytest.raises(DatasetError, match=message) as error:
        GenericDataset(neural_root)
    assert "visreps_dataset.yaml" in str(error.value)


def test_missing_folder_manifest_and_keys(neural_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        GenericDataset(tmp_path / "nowhere")
    manifest = _manifest(neural_root)
    del manifest["stimuli"]
    _write_manifest_dict(neural_root, manifest)
    with pytest.raises(DatasetError, match="lacks the keys stimuli"):
        GenericDataset(neural_root)
    (neural_root / "visreps_dataset.yaml").write_text("format: [unclosed")
    with pytest.raises(DatasetError, match="not valid YAML"):
        GenericDataset(neural_root)
    (neural_root / "visreps_dataset.yaml").unlink()
    with pytest.raises(DatasetError, match=r"visreps_dataset.yaml is missing; write it"):
        GenericDataset(neural_root)


def test_bad_stimulus_tables(neural_root: Path) -> None:
    table_path = neural_root / "stimuli.csv"
    original = table_path.read_text()
    table_path.unlink()
    with pytest.raises(DatasetError, match="stimuli.csv is missing"):
        GenericDataset(neural_root)
    table_path.write_text(original.replace("stimulus_id,", "id,", 1))
    with pytest.raises(DatasetError, match="lacks the columns stimulus_id"):
        GenericDataset(neural_root)
    lines = original.splitlines()
    table_path.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(DatasetError, match="duplicate stimulus ids s000"):
        GenericDataset(neural_root)
    table_path.write_text("\n".join(lines + [",images/s000.png,a"]) + "\n")
    with pytest.raises(DatasetError, match="column stimulus_id is empty on line"):
        GenericDataset(neural_root)


def test_missing_image_file(neural_root: Path) -> None:
    (neural_root / "images" / "s005.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image files .* do not exist .*images/s005.png"):
        GenericDataset(neural_root)
    dataset = GenericDataset(neural_root, check_images=False)
    with pytest.raises(DatasetError, match="s005.png does not exist"):
        dataset.load_image("s005")
    with pytest.raises(DatasetError, match="unknown image id 'zzz'"):
        dataset.load_image("zzz")


def test_unknown_option(neural_root: Path) -> None:
    with pytest.raises(DatasetError, match="unknown options cache"):
        open_dataset("generic", neural_root, cache=True)


def test_missing_and_corrupt_response_files(neural_root: Path) -> None:
    path = _npz(neural_root, "sub-02", "IT")
    path.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match=r"IT.npz is not a readable .npz"):
        GenericDataset(neural_root)
    path.unlink()
    with pytest.raises(DatasetError, match=r"sub-02/IT.npz is missing"):
        GenericDataset(neural_root)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"test_ids": np.asarray(["s012", "s013", "s014", "s015", "s016", "unknown"])},
         "1 ids are not stimulus_ids of stimuli.csv .first: unknown"),
        ({"train": np.zeros((N_TRAIN - 1, N_UNITS), np.float32)},
         r"array train must be \(train_ids, units\) = \(12, n_units\)"),
        ({"test": np.zeros((N_TEST, N_UNITS + 1), np.float32)}, "train has 5 units but test has 6"),
        ({"test_ids": np.asarray(["s012", "s013", "s014", "s015", "s016", "s000"])},
         "in both train_ids and test_ids: s000"),
        ({"train_ids": np.asarray(["s000"] * N_TRAIN)}, "train_ids lists stimuli twice: s000"),
        ({"train_ids": np.asarray([f"s{i:03d}" for i in range(N_TRAIN)], dtype=object)}, "holds Python objects"),
        ({"train_ids": np.arange(N_TRAIN)}, "must hold text"),
        ({"test_repetitions": np.zeros((N_TEST, N_REPS, N_UNITS - 1), np.float32)}, "test_repetitions must be"),
        ({"noise_ceiling": np.zeros(2)}, r"noise_ceiling must have shape \(5,\)"),
        ({"train": None}, "lacks the arrays train"),
        ({"trian": np.zeros(3)}, "unknown arrays trian"),
        ({"train": np.zeros((N_TRAIN, 0), np.float32), "test": np.zeros((N_TEST, 0), np.float32),
          "train_repetitions": None, "test_repetitions": None, "noise_ceiling": None}, "the region has no units"),
        ({"test_ids": np.asarray([], dtype=str), "test": np.zeros((0, N_UNITS), np.float32), "test_repetitions": None},
         "no test stimuli"),
    ],
)
def test_bad_response_arrays(neural_root: Path, change: dict, message: str) -> None:
    _rewrite(neural_root, **change)
    with pytest.raises(DatasetError, match=message) as error:
        GenericDataset(neural_root)
    assert "sub-01/V1.npz" in str(error.value)


def test_nan_units_are_dropped_with_a_warning(neural_root: Path) -> None:
    with np.load(_npz(neural_root)) as data:
        train, test = data["train"].copy(), data["test"].copy()
    train[3, 1] = np.nan
    test[0, 4] = np.inf
    _rewrite(neural_root, train=train, test=test)
    dataset = GenericDataset(neural_root)
    with pytest.warns(UserWarning, match=r"dropped 2 of 5 units .*indices \[1, 4\]"):
        responses = dataset.responses("sub-01", "V1")
    assert responses.info["dropped_units"] == [1, 4] and responses.info["n_units_original"] == 5
    assert responses.n_units == 3 and np.isfinite(responses.train).all() and np.isfinite(responses.test).all()
    np.testing.assert_array_equal(responses.train, train[:, [0, 2, 3]])
    assert responses.test_repetitions.shape == (N_TEST, N_REPS, 3) and responses.noise_ceiling.shape == (3,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset.responses("sub-02", "V1")  # untouched region: no warning

    _rewrite(neural_root, train=np.full_like(train, np.nan))
    with pytest.raises(DatasetError, match="every unit has NaN"):
        GenericDataset(neural_root).responses("sub-01", "V1")


def test_unknown_subject_region_and_stimulus(neural_root: Path) -> None:
    dataset = GenericDataset(neural_root)
    with pytest.raises(DatasetError, match="unknown subject 'sub-09'.*sub-01, sub-02"):
        dataset.responses("sub-09", "V1")
    with pytest.raises(DatasetError, match="unknown region 'V2'"):
        dataset.responses("sub-01", "V2")
    with pytest.raises(DatasetError, match="unknown subject"):
        dataset.regions("sub-09")
    with pytest.raises(DatasetError, match="unknown stimulus"):
        dataset.stimulus_images("zzz")


def test_writers_check_before_writing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="train has 2 units but test has 3"):
        write_neural_responses(tmp_path, "s", "r", train_ids=["a"], test_ids=["b"], train=np.zeros((1, 2)),
                               test=np.zeros((1, 3)))
    assert not (tmp_path / "responses").exists()
    with pytest.raises(DatasetError, match="kind must be"):
        write_manifest(tmp_path, name="x", kind="other", subjects=["s"], regions=["r"])
    with pytest.raises(DatasetError, match="test_only: true"):
        write_neural_responses(tmp_path, "s", "r", train_ids=[], test_ids=["b"], train=np.zeros((0, 2)),
                               test=np.zeros((1, 2)))
    write_neural_responses(tmp_path, "s", "r", train_ids=[], test_ids=["b"], train=np.zeros((0, 2)),
                           test=np.zeros((1, 2)), test_only=True)


def test_bad_behaviour_files(behaviour_root: Path) -> None:
    path = behaviour_root / "behaviour.npz"
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    np.savez(path, **{**arrays, "selection_concepts": arrays["selection_concepts"][:-1]})
    with pytest.raises(DatasetError, match="must split the concepts"):
        GenericDataset(behaviour_root)
    np.savez(path, **{**arrays, "embedding": arrays["embedding"][:-1]})
    with pytest.raises(DatasetError, match=r"embedding must be \(concepts, dims\) = \(10, n_dims\)"):
        GenericDataset(behaviour_root)
    stray = {**arrays, "concepts": np.asarray([*arrays["concepts"][:-1], "ghost"]),
             "evaluation_concepts": np.asarray([c if c != arrays["concepts"][-1] else "ghost"
                                                for c in arrays["evaluation_concepts"]])}
    if arrays["concepts"][-1] in arrays["selection_concepts"]:
        stray["selection_concepts"] = np.asarray([c if c != arrays["concepts"][-1] else "ghost"
                                                  for c in arrays["selection_concepts"]])
    np.savez(path, **stray)
    with pytest.raises(DatasetError, match=r"concepts without images \['ghost'\]"):
        GenericDataset(behaviour_root)
    del arrays["embedding"]
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match="lacks the arrays embedding"):
        GenericDataset(behaviour_root)
    manifest = _manifest(behaviour_root)
    manifest["regions"] = ["behaviour", "other"]
    _write_manifest_dict(behaviour_root, manifest)
    with pytest.raises(DatasetError, match="one subject and one region"):
        GenericDataset(behaviour_root)


def test_behaviour_table_needs_concept_column(behaviour_root: Path) -> None:
    table = (behaviour_root / "stimuli.csv").read_text().splitlines()
    header = table[0].split(",")
    keep = [i for i, column in enumerate(header) if column != "concept"]
    (behaviour_root / "stimuli.csv").write_text(
        "\n".join(",".join(line.split(",")[i] for i in keep) for line in table) + "\n")
    with pytest.raises(DatasetError, match="lacks the columns concept"):
        GenericDataset(behaviour_root)


def test_load_image_converts_to_rgb(neural_root: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4), 200, dtype=np.uint8)).save(buffer, format="PNG")
    (neural_root / "images" / "s001.png").write_bytes(buffer.getvalue())
    image = GenericDataset(neural_root).load_image("s001")
    assert image.mode == "RGB" and np.asarray(image)[0, 0].tolist() == [200, 200, 200]
