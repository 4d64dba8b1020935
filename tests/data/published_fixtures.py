"""Tiny, format-faithful copies of the published dataset layouts (NSD, NSD-synthetic, TVSD, THINGS).

Each builder writes files the way their authors publish them (HDF5 betas in (trials, Z, Y, X) order, NIfTI
masks in (X, Y, Z), FreeSurfer label tables, MATLAB v5 and v7.3 .mat files — the latter with a MATLAB user
block, MATLAB_class attributes, transposed storage and strings as object references to uint16 char arrays)
and returns the ground truth the tests recompute expected values from.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io
from PIL import Image

NSD_SUBJECTS = [f"subj{i:02d}" for i in range(1, 9)]
ATLAS_LABELS = {
    "prf-visualrois": ["V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"],
    "streams": ["early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"],
    "floc-faces": ["OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"],
    "floc-places": ["OPA", "PPA", "RSC"],
}


# --- MATLAB v7.3 -----------------------------------------------------------------------------------------------
class CellStr(list):
    """A MATLAB n×1 cell array of strings."""


class StructArray(dict):
    """A MATLAB 1×n struct array whose fields are lists of strings."""


def _write_chars(refs: h5py.Group, text: str) -> h5py.Dataset:
    name = f"r{len(refs)}"
    codes = np.array([ord(c) for c in text], dtype=np.uint16).reshape(-1, 1)  # MATLAB 1×L stored as (L, 1)
    ds = refs.create_dataset(name, data=codes)
    ds.attrs["MATLAB_class"] = np.bytes_("char")
    ds.attrs["MATLAB_int_decode"] = np.int32(2)
    return ds


def _ref_dataset(parent: h5py.Group, name: str, refs: h5py.Group, strings: list[str], shape: tuple[int, int]):
    data = np.empty(shape, dtype=h5py.ref_dtype)
    flat = data.reshape(-1)
    for i, text in enumerate(strings):
        flat[i] = _write_chars(refs, text).ref
    ds = parent.create_dataset(name, data=data, dtype=h5py.ref_dtype)
    ds.attrs["MATLAB_class"] = np.bytes_("cell")
    return ds


def write_mat73(path: Path, variables: dict[str, Any]) -> None:
    """Write ``variables`` as MATLAB -v7.3 does: numeric arrays transposed, strings via #refs#."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as handle:
        refs = handle.create_group("#refs#")
        for name, value in variables.items():
            if isinstance(value, StructArray):
                group = handle.create_group(name)
                group.attrs["MATLAB_class"] = np.bytes_("struct")
                for field, strings in value.items():
                    _ref_dataset(group, field, refs, list(strings), (len(strings), 1))
            elif isinstance(value, CellStr):
                _ref_dataset(handle, name, refs, list(value), (1, len(value)))
            else:
                array = np.asarray(value)
                ds = handle.create_dataset(name, data=array.T)  # MATLAB column-major -> reversed axes
                ds.attrs["MATLAB_class"] = np.bytes_({"f": "double" if array.dtype == np.float64 else "single",
                                                      "i": "int32", "u": "uint8"}[array.dtype.kind])
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as raw:
        raw.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


# --- NSD -------------------------------------------------------------------------------------------------------
def _nifti(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine=np.eye(4)), str(path))


def write_subject_rois(root: Path, subject: str, shape: tuple[int, int, int], rng: np.random.Generator) -> dict:
    """ROI atlases (X, Y, Z; -1 outside x < shape[0]-1's brain), label tables and a brain mask."""
    brain = np.ones(shape, dtype=bool)
    brain[-1] = False  # the last X slab lies outside the brain
    atlases = {}
    for atlas, labels in ATLAS_LABELS.items():
        volume = rng.integers(0, len(labels) + 1, size=shape).astype(np.float32)
        volume[~brain] = -1
        atlases[atlas] = volume
        _nifti(root / f"nsddata/ppdata/{subject}/func1pt8mm/roi/{atlas}.nii.gz", volume)
        table = root / f"nsddata/freesurfer/{subject}/label/{atlas}.mgz.ctab"
        table.parent.mkdir(parents=True, exist_ok=True)
        table.write_text("\n".join(f"{i} {name}" for i, name in enumerate(["Unknown", *labels])) + "\n")
    _nifti(root / f"nsddata/ppdata/{subject}/func1pt8mm/brainmask.nii.gz", brain.astype(np.int16))
    return {"atlases": atlases, "brain": brain}


def build_nsd(root: Path, subjects=("subj01", "subj02"), n_sessions: int = 2, shape=(6, 5, 4), n_shared: int = 100,
              seed: int = 0, constant_voxel: bool = True, invalid_voxel: bool = True, betas_chunks: str = "voxel") -> dict:
    """An NSD-like download: ``n_sessions`` sessions of 750 trials for ``subjects``; returns the truth.

    ``betas_chunks``: ``voxel`` (as published: one chunk per voxel, h5py chunks (750, 1, 1, 1)), ``trial``
    (one chunk per trial volume) or ``none`` (contiguous).
    """
    chunks = {"voxel": (750, 1, 1, 1), "trial": (1, *shape[::-1]), "none": None}[betas_chunks]
    rng = np.random.default_rng(seed)
    root = Path(root)
    n_trials = 750 * n_sessions
    n_columns = -(-n_trials // 3) + 100  # images per subject; each shown up to 3 times
    shared_ids = rng.permutation(np.arange(1, n_shared + 1))  # 1-based nsdIds, shared by everyone
    subjectim = np.zeros((8, n_columns), dtype=np.int64)
    for s in range(8):
        own = n_shared + 1 + s * (n_columns - n_shared) + np.arange(n_columns - n_shared)
        subjectim[s] = np.r_[shared_ids, rng.permutation(own)]
    masterordering = rng.permutation(np.tile(np.arange(1, n_columns + 1), 3))[:n_trials]
    n_images = int(subjectim.max())
    exp = root / "nsddata/experiments/nsd"
    exp.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(exp / "nsd_expdesign.mat", {
        "masterordering": masterordering[None, :].astype(np.float64),
        "subjectim": subjectim.astype(np.float64),
        "sharedix": np.sort(shared_ids)[None, :].astype(np.float64),
    })
    truth: dict[str, Any] = {"shape": shape, "shared": np.sort(shared_ids) - 1, "subjects": {}, "n_images": n_images}
    table = pd.DataFrame({"cocoId": np.arange(n_images) + 1000, "nsdId": np.arange(n_images),
                          "shared1000": np.isin(np.arange(n_images), np.sort(shared_ids) - 1)})
    for s, subject in enumerate(NSD_SUBJECTS):
        trial_images = subjectim[s, masterordering - 1] - 1
        reps = np.zeros((n_images, 3), dtype=np.int64)
        seen = np.zeros(n_images, dtype=np.int64)
        for t, image in enumerate(trial_images):
            reps[image, seen[image]] = t + 1
            seen[image] += 1
        for r in range(3):
            table[f"subject{s + 1}_rep{r}"] = reps[:, r]
        truth["subjects"][subject] = {"trial_images": trial_images}
    table.to_csv(exp / "nsd_stim_info_merged.csv")
    stimuli = root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
    stimuli.parent.mkdir(parents=True, exist_ok=True)
    brick = np.zeros((n_images, 4, 4, 3), dtype=np.uint8)
    brick[:, :, :, 0] = (np.arange(n_images) % 256)[:, None, None]
    brick[:, :, :, 1] = (np.arange(n_images) // 256)[:, None, None]
    with h5py.File(stimuli, "w") as handle:
        handle.create_dataset("imgBrick", data=brick)
    for subject in subjects:
        record = truth["subjects"][subject]
        record.update(write_subject_rois(root, subject, shape, rng))
        func = root / f"nsddata/ppdata/{subject}/func1pt8mm"
        betas_folder = root / f"nsddata_betas/ppdata/{subject}/func1pt8mm/betas_fithrf_GLMdenoise_RR"
        betas_folder.mkdir(parents=True, exist_ok=True)
        record["ncsnr"] = rng.uniform(0.05, 1.5, size=shape).astype(np.float32)
        _nifti(betas_folder / "ncsnr.nii.gz", record["ncsnr"])
        record["betas"], record["valid"] = [], []
        labelled = np.argwhere((record["atlases"]["prf-visualrois"] == 1) & record["brain"])
        for session in range(1, n_sessions + 1):
            offset = rng.normal(0, 2, size=shape)
            scale = rng.uniform(0.5, 3, size=shape)
            data = offset + scale * rng.normal(size=(750, *shape))  # (trials, X, Y, Z) in percent signal change
            valid = np.ones(shape, dtype=np.int16)
            if constant_voxel and session == n_sessions:
                x, y, z = labelled[0]
                data[:, x, y, z] = 1.5  # constant in this session -> must be dropped and reported
            if invalid_voxel and session == n_sessions:
                x, y, z = labelled[1]
                valid[x, y, z] = 0
            betas = np.round(data * 300).astype(np.int16).transpose(0, 3, 2, 1)  # h5py order (750, Z, Y, X)
            with h5py.File(betas_folder / f"betas_session{session:02d}.hdf5", "w") as handle:
                handle.create_dataset("betas", data=betas, chunks=chunks)
            _nifti(func / f"valid_session{session:02d}.nii.gz", valid)
            record["betas"].append(betas)
            record["valid"].append(valid.astype(bool))
        record["constant_xyz"] = tuple(labelled[0]) if constant_voxel else None
        record["invalid_xyz"] = tuple(labelled[1]) if invalid_voxel else None
    return truth


def build_nsd_synthetic(root: Path, subjects=("subj01",), shape=(5, 4, 3), seed: int = 1) -> dict:
    """NSD-synthetic: 744 trials over 284 stimuli (236×2, 32×4, 8×8, 8×10 repetitions), 220 shared images."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    counts = rng.permutation(np.r_[np.full(236, 2), np.full(32, 4), np.full(8, 8), np.full(8, 10)])
    order = rng.permutation(np.repeat(np.arange(1, 285), counts))
    design = root / "nsddata/experiments/nsdsynthetic/nsdsynthetic_expdesign.mat"
    design.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(design, {"masterordering": order[None, :].astype(np.float64)})
    folder = root / "nsddata_stimuli/stimuli/nsdsynthetic"
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "nsdsynthetic_stimuli.hdf5", "w") as handle:
        handle.create_dataset("imgBrick", data=np.repeat(np.arange(220, dtype=np.uint8)[:, None, None], 4 * 6, 1).reshape(220, 4, 6))
    truth: dict[str, Any] = {"order": order - 1, "counts": counts, "shape": shape, "subjects": {}}
    for s, subject in enumerate(subjects):
        colour = np.zeros((64, 4, 6, 3), dtype=np.uint8)
        colour[..., 0] = np.arange(64)[:, None, None]
        colour[..., 2] = s + 1
        with h5py.File(folder / f"nsdsynthetic_colorstimuli_{subject}.hdf5", "w") as handle:
            handle.create_dataset("imgBrick", data=colour)
        record = write_subject_rois(root, subject, shape, rng)
        data = rng.normal(0, 1, size=shape) + rng.normal(size=(order.size, *shape))
        betas = np.round(data * 300).astype(np.int16).transpose(0, 3, 2, 1)
        path = root / f"nsddata_betas/ppdata/{subject}/func1pt8mm/nsdsyntheticbetas_fithrf_GLMdenoise_RR/betas_nsdsynthetic.hdf5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as handle:
            handle.create_dataset("betas", data=betas)
        record["betas"] = betas
        truth["subjects"][subject] = record
    return truth


# --- THINGS images, TVSD, THINGS behaviour ---------------------------------------------------------------------
CONCEPTS = ["aardvark", "abacus", "accordion", "acorn", "air_conditioner", "airplane", "alligator", "almond",
            "altar", "aluminum_foil", "ambulance", "anchor", "angel", "ankle", "ant", "anteater", "antelope",
            "anvil", "apple", "apron"]


def write_things_images(images_dir: Path, stems_by_concept: dict[str, list[str]]) -> None:
    """Tiny JPEGs ``<images_dir>/<concept>/<stem>.jpg`` whose colour encodes their order."""
    for number, (concept, stem) in enumerate((c, s) for c, stems in stems_by_concept.items() for s in stems):
        folder = images_dir / concept
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (number * 7 % 256, 100, 50)).save(folder / f"{stem}.jpg")


def build_tvsd(root: Path, n_train_concepts: int = 4, per_concept: int = 6, n_test: int = 5, n_reps: int = 6,
               n_electrodes: int = 1024, seed: int = 2, nan_electrode: int | None = 700) -> dict:
    """TVSD normMUA + image order for monkeyF (struct things_imgs) and monkeyN (cellstr things_imgs)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    concepts = CONCEPTS[:n_train_concepts]
    train_stems = [f"{c}_{i:02d}{'abcdefgh'[i % 8]}" for c in concepts for i in range(1, per_concept + 1)]
    test_stems = [f"{concepts[i % len(concepts)]}_{20 + i:02d}s" for i in range(n_test)]
    stems_by_concept: dict[str, list[str]] = {c: [] for c in concepts}
    for stem in train_stems + test_stems:
        stems_by_concept[stem.rsplit("_", 1)[0]].append(stem)
    write_things_images(root / "THINGS" / "object_images", stems_by_concept)
    truth: dict[str, Any] = {"train_stems": train_stems, "test_stems": test_stems, "monkeys": {}}
    for monkey in ("monkeyF", "monkeyN"):
        reps = rng.normal(size=(n_electrodes, n_test, n_reps)) + rng.normal(size=(n_electrodes, n_test, 1))
        train = rng.normal(size=(n_electrodes, len(train_stems)))
        if nan_electrode is not None and monkey == "monkeyF":
            train[nan_electrode, 3] = np.nan
        test = reps.mean(axis=2)
        order = rng.permutation(len(train_stems))  # each monkey has its own image order
        train_paths = [f"{train_stems[i].rsplit('_', 1)[0]}\\{train_stems[i]}.jpg" for i in order]
        test_paths = [f"{s.rsplit('_', 1)[0]}\\{s}.jpg" for s in test_stems]
        write_mat73(root / monkey / "THINGS_normMUA.mat", {
            "train_MUA": train[:, order], "test_MUA": test, "test_MUA_reps": reps,
            "SNR": rng.uniform(1, 5, size=(n_electrodes, 3)), "reliab": rng.uniform(0, 1, size=(n_electrodes, 15)),
            "oracle": rng.uniform(0, 1, size=(1, n_electrodes)),
        })
        if monkey == "monkeyF":
            image_vars = {"train_imgs": StructArray(things_path=train_paths,
                                                    **{"class": [p.split("\\")[0] for p in train_paths]}),
                          "test_imgs": StructArray(things_path=test_paths, **{"class": [p.split("\\")[0] for p in test_paths]})}
        else:
            image_vars = {"train_imgs": CellStr(train_paths), "test_imgs": CellStr(test_paths)}
        write_mat73(root / monkey / "_logs" / "things_imgs.mat", image_vars)
        truth["monkeys"][monkey] = {"train": train[:, order], "test": test, "reps": reps,
                                    "train_ids": [train_stems[i] for i in order]}
    return truth


def build_things(root: Path, n_concepts: int = 20, n_dims: int = 66, seed: int = 3) -> dict:
    """SPoSE embedding (whitespace table, no header), unique_id.txt and object_images/<concept>/<concept>_NNx.jpg."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    concepts = CONCEPTS[:n_concepts]
    embedding = np.round(np.clip(rng.gamma(0.5, 0.5, size=(n_concepts, n_dims)), 0, None), 6)
    np.savetxt(root / "spose_embedding_66d_sorted.txt", embedding, fmt="%.6f", delimiter=" ")
    (root / "unique_id.txt").write_text("\n".join(concepts) + "\n")
    letters = itertools.cycle("abcdefghijklmnopqrs")
    stems = {c: [f"{c}_{i:02d}{next(letters)}" for i in range(1, 2 + k % 3)] for k, c in enumerate(concepts)}
    write_things_images(root / "object_images", stems)
    return {"concepts": concepts, "embedding": embedding, "stems": stems}


# --- pytest ----------------------------------------------------------------------------------------------------
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def visreps_home(tmp_path, monkeypatch):
    """Every test writes its caches under tmp_path (VISREPS_HOME), never into the project."""
    home = tmp_path / "visreps-home"
    monkeypatch.setenv("VISREPS_HOME", str(home))
    return home
