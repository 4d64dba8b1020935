"""The built-in demo dataset: determinism, caching by version and config, atomic publication, labels,
the ground truth of the generative model (features that generated a region reach its noise ceiling)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from pydantic import ValidationError
from sklearn.linear_model import RidgeCV

from visreps.config import runtime_field
from visreps.data import demo
from visreps.data.demo import brain as demo_brain
from visreps.data.demo import config as demo_config_module
from visreps.data.demo import generate as demo_generate_module
from visreps.data.base import DatasetError
from visreps.data.demo import (
    DemoDataConfig, brain_stimulus_latents, default_demo_root, demo_config_hash, generate_demo_dataset,
    ground_truth_features, open_demo_dataset, sample_image_grid, train_image_latents,
)
from visreps.data.demo.images import (
    COLOUR_HUES, N_FINE, SHAPES, fine_class, hsv_to_rgb, png_bytes, render_images, sample_latents,
)
from visreps.data.base import concept_split
from visreps.data.images import scan_class_folders

TINY = DemoDataConfig(n_train_images=64, image_size=32, n_subjects=1, n_train_stimuli_per_subject=16,
                      n_test_stimuli=16, n_voxels=4, n_images_per_concept=1, behaviour_dims=3)
SMALL = DemoDataConfig(n_train_images=200, image_size=32, n_subjects=2, n_train_stimuli_per_subject=600,
                       n_test_stimuli=200, n_voxels=60, n_images_per_concept=2, behaviour_dims=8)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> demo.DemoDataset:
    return generate_demo_dataset(SMALL, root=tmp_path_factory.mktemp("demo") / "small", progress=False)


def _file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    return (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))


def _spearman_brown_ceiling(repetitions: np.ndarray) -> np.ndarray:
    """Expected Pearson r of a perfect model with the repetition average, per unit (computed here, independently)."""
    k = repetitions.shape[1]
    r1 = np.mean([_pearson_columns(repetitions[:, i], repetitions[:, j]) for i in range(k) for j in range(i + 1, k)],
                 axis=0)
    return np.sqrt(np.clip(k * r1 / (1 + (k - 1) * r1), 0, None))


# ---------------------------------------------------------------- determinism, caching, atomicity


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = generate_demo_dataset(TINY, root=tmp_path / "a", progress=False)
    second = generate_demo_dataset(TINY, root=tmp_path / "b", progress=False)
    other = generate_demo_dataset(TINY.model_copy(update={"seed": 1}), root=tmp_path / "c", progress=False)
    hashes = _file_hashes(first.root)
    assert len(hashes) > 64 + 32 + 64
    assert hashes == _file_hashes(second.root)
    other_hashes = _file_hashes(other.root)
    assert {Path(name).name for name in other_hashes} == {Path(name).name for name in hashes}
    shared = [name for name in hashes if name.endswith((".png", ".npz")) and name in other_hashes]
    assert len(shared) >= 16 + 16 + 64 + 3 and all(hashes[name] != other_hashes[name] for name in shared)


def test_complete_folder_is_reused(tmp_path: Path) -> None:
    made = generate_demo_dataset(TINY, root=tmp_path / "d", progress=False)
    assert not made.reused and made.elapsed_s > 0
    stamp = made.generator_json.stat().st_mtime_ns
    again = generate_demo_dataset(TINY, root=tmp_path / "d", progress=False)
    assert again.reused and again.generator_json.stat().st_mtime_ns == stamp
    assert again.summary == made.summary and again.fingerprint == made.fingerprint


def test_config_change_regenerates_in_place(tmp_path: Path) -> None:
    root = tmp_path / "d"
    generate_demo_dataset(TINY, root=root, progress=False)
    before = _file_hashes(root)
    changed = generate_demo_dataset(TINY.model_copy(update={"noise_sd_early": 0.5}), root=root, progress=False)
    assert not changed.reused
    info = json.loads((root / "generator.json").read_text())
    assert info["config"]["noise_sd_early"] == 0.5 and info["config_hash"] != demo_config_hash(TINY)
    after = _file_hashes(root)
    assert after["brain/responses/sub-01/early.npz"] != before["brain/responses/sub-01/early.npz"]
    assert after["brain/responses/sub-01/ventral.npz"] == before["brain/responses/sub-01/ventral.npz"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary or old folder left


def test_version_change_regenerates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "d"
    generate_demo_dataset(TINY, root=root, progress=False)
    default_before = default_demo_root(TINY)
    bumped = demo.GENERATOR_VERSION + 1
    for module in (demo, demo_config_module, demo_generate_module):  # the constant and its two importers
        monkeypatch.setattr(module, "GENERATOR_VERSION", bumped)
    with pytest.raises(DatasetError, match="written by demo generator version"):
        open_demo_dataset(root)
    regenerated = generate_demo_dataset(TINY, root=root, progress=False)
    assert not regenerated.reused
    assert json.loads((root / "generator.json").read_text())["version"] == demo.GENERATOR_VERSION
    assert default_demo_root(TINY) != default_before
    assert default_demo_root(TINY).name == f"demo-v{demo.GENERATOR_VERSION}-{demo_config_hash(TINY)}"


def test_default_root_is_per_version_and_config() -> None:
    root = default_demo_root(TINY)
    assert root.parent == Path(os.environ["VISREPS_HOME"]).resolve() / "data"
    assert default_demo_root(TINY.model_copy(update={"seed": 5})) != root
    assert default_demo_root(TINY.model_copy(update={"image_size": 48})) != root


def test_interrupted_generation_leaves_no_complete_looking_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "d"
    seen: list[list[str]] = []

    def interrupted(folder: Path, *args: object) -> None:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        assert (folder.parent / "train_images.csv").is_file()  # earlier parts were written, elsewhere
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_generate_module, "build_brain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_dataset(TINY, root=root, progress=False)
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].startswith(".d.partial-")  # hidden, not at root
    assert list(tmp_path.iterdir()) == []  # cleaned up; nothing at root
    with pytest.raises(DatasetError, match="not a complete visreps demo dataset"):
        open_demo_dataset(root)
    monkeypatch.undo()
    assert not generate_demo_dataset(TINY, root=root, progress=False).reused


def test_partial_folder_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    stale = tmp_path / f".d.partial-{dead_pid}-0123abcd"
    (stale / "train_images").mkdir(parents=True)
    alive = tmp_path / f".d.partial-{os.getpid()}-0123abcd"  # this process: never removed by another run
    alive.mkdir()
    generate_demo_dataset(TINY, root=tmp_path / "d", progress=False)
    assert not stale.exists() and alive.exists()
    assert open_demo_dataset(tmp_path / "d").config == TINY


def test_foreign_folder_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DatasetError, match="is not a visreps demo dataset"):
        generate_demo_dataset(TINY, root=tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_config_validation_and_subclass_configs() -> None:
    for bad in ({"image_size": 16}, {"image_size": 256}, {"n_repetitions": 1}, {"selection_fraction": 1.0},
                {"n_train_images": 10}, {"seed": -1}):
        with pytest.raises(ValidationError):
            DemoDataConfig(**bad)
    with pytest.raises(ValidationError):
        DemoDataConfig(n_images=5)

    class WithExperiment(DemoDataConfig):
        experiment: str = runtime_field("x")

    staged = WithExperiment(**TINY.model_dump(), experiment="other")
    assert demo_config_hash(staged) == demo_config_hash(TINY)
    assert default_demo_root(staged) == default_demo_root(TINY)


def test_default_config_is_deterministic_and_unchanged() -> None:
    """Cheap check at the default config. If the pinned values change, the generator's output changed:
    bump demo.GENERATOR_VERSION (so cached folders regenerate), then update the numbers here."""
    config = DemoDataConfig()
    latents = train_image_latents(config)
    pd.testing.assert_frame_equal(latents, train_image_latents(config))
    counts = np.bincount(latents["fine_label"], minlength=N_FINE)
    assert len(latents) == 6000 and counts.min() == 93 and counts.max() == 94
    assert latents["fine_label"][:8].tolist() == [32, 48, 43, 45, 55, 63, 52, 44]
    images = render_images(latents.iloc[:8], config.image_size)
    assert images.shape == (8, 64, 64, 3)
    np.testing.assert_array_equal(images, render_images(latents.iloc[:8], config.image_size))
    np.testing.assert_allclose(images.reshape(8, -1).mean(axis=1),
                               [95.423, 89.968, 186.879, 150.291, 86.444, 181.069, 102.894, 125.938], atol=0.05)
    brain, owner = brain_stimulus_latents(config)
    assert len(brain) == 6300 and owner[0] == "shared" and owner[300] == "sub-01" and owner[-1] == "sub-04"
    assert brain["fine_label"][:8].tolist() == [23, 61, 27, 50, 19, 21, 29, 63]
    early = demo_brain.early_features(render_images(brain.iloc[:4], config.image_size))
    np.testing.assert_allclose(early.sum(axis=1), [1.0565, 0.4924, 0.5877, 0.6051], atol=2e-4)
    np.testing.assert_allclose(demo_brain.ventral_features(brain.iloc[:4], 0).sum(axis=1),
                               [31.4398, 49.0938, 25.4079, 32.8807], atol=1e-3)
    np.testing.assert_allclose(demo_brain.behaviour_embedding(0, 20).sum(), 1444.923, rtol=1e-5)


# ---------------------------------------------------------------- contents


def test_training_labels_are_balanced_and_nested(small: demo.DemoDataset) -> None:
    table = small.train_labels()
    counts = np.bincount(table["fine_label"], minlength=N_FINE)
    assert counts.max() - counts.min() <= 1 and counts.sum() == SMALL.n_train_images
    assert (table["shape"] == table["fine_label"] // 4).all()
    assert (table["shape_family"] == table["fine_label"] // 16).all()
    assert (table["colour_family"] == table["fine_label"] % 4).all()
    hues = table["hue"].to_numpy()
    offset = (hues - np.asarray(COLOUR_HUES)[table["colour_family"]] + 180) % 360 - 180
    assert np.abs(offset).max() <= 20
    collection = scan_class_folders(small.train_images)  # what the training stage reads
    assert list(collection.class_names) == [fine_class(label).folder for label in range(N_FINE)]
    by_key = dict(zip(collection.keys, collection.fine_labels))
    assert all(by_key[image] == label for image, label in zip(table["image"], table["fine_label"]))
    names = {fine_class(label).concept for label in range(N_FINE)}
    assert len(names) == N_FINE and "red_circle" in names and SHAPES[3][3] == "ell"


def test_brain_stimuli_splits(small: demo.DemoDataset) -> None:
    brain = small.brain()
    assert brain.subjects() == ["sub-01", "sub-02"] and brain.regions() == ["early", "ventral"]
    table = brain.stimulus_table()
    first, second = brain.responses("sub-01", "early"), brain.responses("sub-02", "ventral")
    assert len(first.train_ids) == 600 and len(first.test_ids) == 200 and first.n_units == 60
    assert first.test_ids.tolist() == second.test_ids.tolist()  # shared test set
    assert not set(first.train_ids) & set(second.train_ids)  # training stimuli distinct per subject
    assert first.train_repetitions.shape == (600, 3, 60)
    np.testing.assert_allclose(first.train, first.train_repetitions.mean(axis=1), atol=1e-5)
    for owner in ("shared", "sub-01", "sub-02"):
        counts = np.bincount(table.loc[table["subject"] == owner, "fine_label"], minlength=N_FINE)
        assert counts.max() - counts.min() <= 1


def test_ground_truth_features_reach_the_noise_ceiling(small: demo.DemoDataset) -> None:
    """Ridge from the features that generated a region predicts it up to its split-half ceiling; the other
    region's features do much worse; shuffled stimulus pairings score about zero."""
    brain = small.brain()
    features = {}
    for region in demo_brain.REGIONS:
        ids = brain.responses("sub-01", region)
        features[region] = (ground_truth_features(small.root, ids.train_ids, region),
                            ground_truth_features(small.root, ids.test_ids, region))
    assert features["early"][0].shape == (600, 128) and features["ventral"][1].shape == (200, 64)
    rng = np.random.default_rng(0)
    for region in demo_brain.REGIONS:
        responses = brain.responses("sub-01", region)
        ceiling = _spearman_brown_ceiling(responses.test_repetitions).mean()
        assert 0.55 < ceiling < 0.85
        scores = {}
        for name, (train, test) in features.items():
            mean, std = train.mean(axis=0), train.std(axis=0) + 1e-8
            model = RidgeCV(alphas=np.logspace(-2, 6, 17), alpha_per_target=True).fit((train - mean) / std,
                                                                                       responses.train)
            scores[name] = _pearson_columns(model.predict((test - mean) / std), responses.test).mean()
        other = "ventral" if region == "early" else "early"
        assert 0.93 * ceiling < scores[region] < 1.03 * ceiling, (region, scores, ceiling)
        assert scores[other] < 0.4 * scores[region], (region, scores)
        train, test = features[region]
        mean, std = train.mean(axis=0), train.std(axis=0) + 1e-8
        x_train, x_test = (train - mean) / std, (test - mean) / std
        shuffled = []
        for _ in range(8):
            y = responses.train[rng.permutation(len(train))]
            gram = x_train.T @ x_train + 100.0 * np.eye(x_train.shape[1])
            weights = np.linalg.solve(gram, x_train.T @ (y - y.mean(axis=0)))
            shuffled.append(_pearson_columns(x_test @ weights, responses.test).mean())
        assert abs(np.mean(shuffled)) < 0.06 and max(map(abs, shuffled)) < 0.25, shuffled


def test_stored_noise_ceilings_match_the_repetitions(small: demo.DemoDataset) -> None:
    for region in demo_brain.REGIONS:
        responses = small.brain().responses("sub-02", region)
        estimated = demo_brain.spearman_brown_reliability(responses.test_repetitions)
        np.testing.assert_allclose(np.sqrt(estimated), _spearman_brown_ceiling(responses.test_repetitions), atol=1e-6)
        assert abs(estimated.mean() - responses.noise_ceiling.mean()) < 0.05
    assert 0.5 < small.summary["mean_noise_ceiling"]["early"] < 0.7
    assert 0.35 < small.summary["mean_noise_ceiling"]["ventral"] < 0.55


def test_ground_truth_is_recomputable_from_the_generator(small: demo.DemoDataset) -> None:
    latents, _ = brain_stimulus_latents(SMALL)
    ids = ["stim_00003", "stim_00250", "stim_01399"]
    rows = [int(i.split("_")[1]) for i in ids]
    np.testing.assert_array_equal(ground_truth_features(small.root, ids, "ventral"),
                                  demo_brain.ventral_features(latents.iloc[rows], SMALL.seed))
    images = render_images(latents.iloc[rows], SMALL.image_size)
    np.testing.assert_array_equal(ground_truth_features(small.root, ids, "early"), demo_brain.early_features(images))
    np.testing.assert_array_equal(small.ground_truth(ids, "early"), demo_brain.early_features(images))
    with pytest.raises(DatasetError, match="unknown demo region"):
        ground_truth_features(small.root, ids, "V1")
    with pytest.raises(DatasetError, match="not demo brain stimuli"):
        ground_truth_features(small.root, ["train_00001"], "early")


def test_behaviour_embedding_and_split(small: demo.DemoDataset) -> None:
    behaviour = small.behaviour()
    concepts = behaviour.stimulus_ids()
    assert len(concepts) == N_FINE and concepts[0] == "red_circle"
    responses = behaviour.responses("group", "behaviour")
    assert (responses.train_ids.tolist(), responses.test_ids.tolist()) == concept_split(sorted(concepts), 0.2, 42)
    assert len(responses.train_ids) == 12 and responses.n_units == SMALL.behaviour_dims
    assert all(len(behaviour.stimulus_images(c)) == SMALL.n_images_per_concept for c in concepts)
    embedding = np.concatenate([responses.train, responses.test])
    order = {c: i for i, c in enumerate(np.concatenate([responses.train_ids, responses.test_ids]))}
    embedding = embedding[[order[c] for c in concepts]]
    assert (embedding >= 0).all()
    similarity = np.corrcoef(embedding)
    family = np.arange(N_FINE) // 16
    same = similarity[(family[:, None] == family[None]) & ~np.eye(N_FINE, dtype=bool)].mean()
    assert same > similarity[family[:, None] != family[None]].mean() + 0.1


# ---------------------------------------------------------------- renderer, early features, figure


def test_renderer_draws_the_latents() -> None:
    latents = sample_latents(np.random.default_rng(0), np.array([0, 7]))  # red circle, blue ellipse
    latents[["x", "y", "texture_contrast", "n_clutter", "background_slope_x", "background_slope_y"]] = 0
    latents["scale"] = 0.5
    images = render_images(latents, 64)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    colours = hsv_to_rgb(latents["hue"].to_numpy(), latents["saturation"].to_numpy(), latents["value"].to_numpy())
    np.testing.assert_allclose(images[:, 31, 31] / 255, colours, atol=1 / 255)
    background = latents["background"].to_numpy()[:, None] + latents[
        ["background_tint_r", "background_tint_g", "background_tint_b"]].to_numpy()
    np.testing.assert_allclose(images[:, 0, 0] / 255, np.clip(background, 0, 1), atol=1 / 255)
    assert np.argmax(colours[0]) == 0 and np.argmax(colours[1]) == 2
    from PIL import Image
    import io
    for image, data in zip(images, png_bytes(images)):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), image)


def test_early_features_are_oriented_energy() -> None:
    x = np.arange(64)
    vertical = 128 + 100 * np.sin(2 * np.pi * x / 8)  # luminance varies along x: vertical stripes
    images = np.stack([np.broadcast_to(vertical[None, :, None], (64, 64, 3)),
                       np.broadcast_to(vertical[:, None, None], (64, 64, 3)),
                       np.full((64, 64, 3), 128.0)]).round().astype(np.uint8)
    features = demo_brain.early_features(images).reshape(3, 4, 2, 16).mean(axis=3)  # orientation, wavelength
    assert np.unravel_index(features[0].argmax(), (4, 2)) == (0, 0)  # 0 degrees, wavelength 8
    assert np.unravel_index(features[1].argmax(), (4, 2)) == (2, 0)  # 90 degrees
    assert features[2].max() < 1e-6  # uniform luminance: no energy


def test_early_features_match_a_direct_computation() -> None:
    """Reference: full-resolution circular convolution in float64, amplitude at every second pixel."""
    latents = sample_latents(np.random.default_rng(3), np.arange(0, 64, 4))
    images = render_images(latents, 48)  # not 64: exercises the resize to the analysis size
    luminance = demo_brain.luminance(images).astype(np.float64)
    assert luminance.shape == (16, 64, 64)
    padded = np.pad(luminance, ((0, 0), (16, 16), (16, 16)), mode="reflect")
    spectrum = np.fft.fft2(padded)
    expected = []
    for kernel in demo_brain.gabor_bank():
        amplitude = np.abs(np.fft.ifft2(spectrum * kernel))[:, 16:80:2, 16:80:2]
        expected.append(amplitude.reshape(16, 4, 8, 4, 8).mean(axis=(2, 4)).reshape(16, -1))
    expected = np.concatenate(expected, axis=1)
    np.testing.assert_allclose(demo_brain.early_features(images), expected, rtol=0, atol=1e-6 * expected.max())
    assert len(demo_brain.early_feature_names()) == expected.shape[1] == demo_brain.N_EARLY_FEATURES


def test_sample_image_grid(small: demo.DemoDataset, tmp_path: Path) -> None:
    figure = sample_image_grid(small.root, n_per_class=2)
    assert isinstance(figure, Figure)
    figure.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 10_000
    with pytest.raises(DatasetError, match="train_images.csv is missing"):
        sample_image_grid(tmp_path)
