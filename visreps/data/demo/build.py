"""Building the parts of a demo dataset folder (see ``visreps.data.demo`` and docs/demo_data.md).

Each ``build_*`` writes one part under ``root`` and returns its summary; the latent tables come from
``*_latents(config)``, so tests can re-derive any stimulus without generating the folder.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from visreps.data.demo import brain as brain_model
from visreps.data.demo.config import DemoDataConfig
from visreps.data.demo.images import (
    N_FINE, balanced_labels, chunk_size, fine_class, png_bytes, render_images, sample_latents,
)
from visreps.data.generic.writer import write_behaviour_dataset, write_neural_dataset



def subject_names(config: DemoDataConfig) -> list[str]:
    """sub-01, sub-02, ..."""
    return [f"sub-{s + 1:02d}" for s in range(config.n_subjects)]


def train_image_latents(config: DemoDataConfig) -> pd.DataFrame:
    """Latents of the training images (row i is ``train_{i:05d}``), class-balanced, in random order."""
    rng = brain_model.stream(config.seed, brain_model.STREAM_TRAIN_IMAGES)
    return sample_latents(rng, balanced_labels(rng, config.n_train_images))


def brain_stimulus_latents(config: DemoDataConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """Latents of the brain stimuli (row i is ``stim_{i:05d}``) and their owner per row.

    Rows: the shared test block first (owner "shared"), then one training block per subject (owner
    "sub-NN"); each block is class-balanced on its own.
    """
    rng = brain_model.stream(config.seed, brain_model.STREAM_BRAIN_STIMULI)
    blocks = [config.n_test_stimuli] + [config.n_train_stimuli_per_subject] * config.n_subjects
    labels = np.concatenate([balanced_labels(rng, n) for n in blocks])
    return sample_latents(rng, labels), np.repeat(["shared"] + subject_names(config), blocks)


def behaviour_image_latents(config: DemoDataConfig) -> pd.DataFrame:
    """Latents of the behaviour images: ``n_images_per_concept`` rows per fine class, in label order."""
    rng = brain_model.stream(config.seed, brain_model.STREAM_BEHAVIOUR_STIMULI)
    return sample_latents(rng, np.repeat(np.arange(N_FINE), config.n_images_per_concept))


def _worker_count() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _write_images(root: Path, paths: Sequence[str], latents: pd.DataFrame, image_size: int, desc: str,
                  progress: bool, work: Callable[[np.ndarray], Any] | None = None) -> list[Any]:
    """Render every latent row to the PNG file ``root/paths[i]``; return ``work(images)`` per chunk, in order.

    Chunks are rendered, encoded and written by a few threads (numpy, zlib and file writes release the
    GIL); at most two chunks per thread are in flight, which bounds memory at large image sizes.
    """
    for folder in sorted({str(Path(p).parent) for p in paths}):
        (root / folder).mkdir(parents=True, exist_ok=True)
    step = chunk_size(image_size)

    def job(start: int) -> tuple[int, Any]:
        images = render_images(latents.iloc[start:start + step], image_size)
        for offset, data in enumerate(png_bytes(images)):
            (root / paths[start + offset]).write_bytes(data)
        return len(images), None if work is None else work(images)

    starts = list(range(0, len(latents), step))
    results: list[Any] = []
    workers = _worker_count()
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        pending: deque = deque()
        for start in starts:
            pending.append(pool.submit(job, start))
            if len(pending) >= 2 * workers:
                count, result = pending.popleft().result()
                results.append(result)
                bar.update(count)
        while pending:
            count, result = pending.popleft().result()
            results.append(result)
            bar.update(count)
    return results


def _labelled(latents: pd.DataFrame) -> pd.DataFrame:
    names = [fine_class(int(label)).folder for label in latents["fine_label"]]
    return latents.assign(fine_class=names)


def build_train_images(root: Path, config: DemoDataConfig, progress: bool, version: int) -> dict[str, Any]:
    """``root/train_images/<class>/train_<i>.png`` and ``root/train_images.csv`` (labels and latents)."""
    latents = train_image_latents(config)
    table = _labelled(latents)
    paths = [f"{cls}/train_{i:05d}.png" for i, cls in enumerate(table["fine_class"])]
    _write_images(root / "train_images", paths, latents, config.image_size, "demo training images", progress)
    table.insert(0, "image", paths)
    table.to_csv(root / "train_images.csv", index=False, lineterminator="\n")
    counts = np.bincount(latents["fine_label"], minlength=N_FINE)
    return {"n_train_images": len(table), "n_fine_classes": N_FINE,
            "images_per_class_min": int(counts.min()), "images_per_class_max": int(counts.max())}


def build_brain(root: Path, config: DemoDataConfig, progress: bool, version: int) -> dict[str, Any]:
    """The generic neural dataset under ``root``: stimuli, images, responses per subject and region."""
    subjects = subject_names(config)
    latents, owner = brain_stimulus_latents(config)
    ids = [f"stim_{i:05d}" for i in range(len(latents))]
    paths = [f"images/{i}.png" for i in ids]
    early = np.concatenate(_write_images(root, paths, latents, config.image_size, "demo brain stimuli", progress,
                                         work=brain_model.early_features))
    ventral = brain_model.ventral_features(latents, config.seed)
    table = _labelled(latents)
    table.insert(0, "stimulus_id", ids)
    table.insert(1, "image", paths)
    table.insert(2, "split", np.where(owner == "shared", "test", "train"))
    table.insert(3, "subject", owner)
    test_rows = np.arange(config.n_test_stimuli)
    responses: dict[tuple[str, str], dict[str, Any]] = {}
    reliability: dict[str, list[float]] = {region: [] for region in brain_model.REGIONS}
    ceiling: dict[str, list[float]] = {region: [] for region in brain_model.REGIONS}
    for index, subject in enumerate(subjects):
        train_rows = np.flatnonzero(owner == subject)
        rows = np.concatenate([train_rows, test_rows])
        n_train = len(train_rows)
        for region, features, noise in (("early", early, config.noise_sd_early),
                                        ("ventral", ventral, config.noise_sd_ventral)):
            out = brain_model.simulate_region(features[rows], index, region, config.seed, config.n_voxels, noise,
                                              config.n_repetitions)
            responses[(subject, region)] = {
                "train_ids": [ids[i] for i in train_rows], "test_ids": [ids[i] for i in test_rows],
                "train": out["average"][:n_train], "test": out["average"][n_train:],
                "train_repetitions": out["repetitions"][:n_train], "test_repetitions": out["repetitions"][n_train:],
                "noise_ceiling": out["noise_ceiling"],
            }
            test_reliability = brain_model.spearman_brown_reliability(out["repetitions"][n_train:])
            reliability[region].append(float(test_reliability.mean()))
            ceiling[region].append(float(out["noise_ceiling"].mean()))
    write_neural_dataset(
        root, name="visreps-demo-brain", stimuli=table, responses=responses,
        description=f"visreps demo brain data (generator v{version}, seed {config.seed}); "
                    "see docs/demo_data.md",
    )
    return {
        "subjects": subjects, "regions": list(brain_model.REGIONS), "n_brain_stimuli": len(ids),
        "n_voxels": config.n_voxels, "n_early_features": brain_model.N_EARLY_FEATURES,
        "n_ventral_features": brain_model.N_VENTRAL_FEATURES,
        "mean_noise_ceiling": {r: round(float(np.mean(v)), 4) for r, v in ceiling.items()},
        "mean_test_reliability": {r: round(float(np.mean(v)), 4) for r, v in reliability.items()},
    }


def build_behaviour(root: Path, config: DemoDataConfig, progress: bool, version: int) -> dict[str, Any]:
    """The generic behaviour dataset under ``root``: concept images, embedding and the stored split."""
    latents = behaviour_image_latents(config)
    concepts = [fine_class(label).concept for label in range(N_FINE)]
    concept_of = [concepts[label] for label in latents["fine_label"]]
    image_ids = [f"{c}_{i % config.n_images_per_concept + 1:02d}" for i, c in enumerate(concept_of)]
    paths = [f"images/{c}/{i}.png" for c, i in zip(concept_of, image_ids)]
    _write_images(root, paths, latents, config.image_size, "demo behaviour images", progress)
    table = _labelled(latents)
    table.insert(0, "stimulus_id", image_ids)
    table.insert(1, "image", paths)
    table.insert(2, "concept", concept_of)
    dataset = write_behaviour_dataset(
        root, name="visreps-demo-behaviour", stimuli=table, concepts=concepts,
        embedding=brain_model.behaviour_embedding(config.seed, config.behaviour_dims),
        selection_fraction=config.selection_fraction, split_seed=config.split_seed,
        description=f"visreps demo behaviour data (generator v{version}, seed {config.seed}); "
                    "see docs/demo_data.md",
    )
    split = dataset.responses("group", "behaviour")
    return {"n_concepts": len(concepts), "n_behaviour_images": len(table),
            "n_selection_concepts": len(split.train_ids), "n_evaluation_concepts": len(split.test_ids)}
