"""NSD-synthetic (Gifford et al. 2025): one extra scan session of the 8 NSD subjects with 284 synthetic stimuli.

Files under the NSD root: betas ``nsddata_betas/ppdata/subjNN/func1pt8mm/nsdsyntheticbetas_fithrf_GLMdenoise_RR/
betas_nsdsynthetic.hdf5`` (int16 ÷ 300, h5py shape (744, Z, Y, X)), design
``nsddata/experiments/nsdsynthetic/nsdsynthetic_expdesign.mat`` (``masterordering``: trial -> 1-based stimulus),
images ``nsddata_stimuli/stimuli/nsdsynthetic/nsdsynthetic_stimuli.hdf5`` (``imgBrick``, stimuli 1..220) and,
for stimuli 221..284 (which differ per subject), ``nsdsynthetic_colorstimuli_subjNN.hdf5``. ROIs as NSD.

Test-only: the train split is empty; test = stimuli 1..220 (shared by all subjects) or all 284
(``n_stimuli=284``; ids of 221..284 carry the subject: ``nsdsynthetic221_subj01``). Betas are z-scored per
voxel over the session's trials; the noise ceiling comes from the session's own repetitions.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visreps.data.base import DatasetError
from visreps.data.published.matfile import hdf5_dataset, open_hdf5, read_mat_arrays
from visreps.data.published.nsd_volumes import (NSD_SUBJECTS, NSDVolumeDataset, VolumeLayout, brainmask_file,
                                      check_betas_header, require_files)
from visreps.data.published.nsd_read import read_betas_voxels
from visreps.data.published.preprocess import (RepetitionAccumulator, ceiling_from_ncsnr, ncsnr_from_trials,
                                     zscore_within_session)

DESIGN_FILE = Path("nsddata/experiments/nsdsynthetic/nsdsynthetic_expdesign.mat")
STIMULI_DIR = Path("nsddata_stimuli/stimuli/nsdsynthetic")
STIMULI_FILE = STIMULI_DIR / "nsdsynthetic_stimuli.hdf5"
N_SHARED, N_ALL = 220, 284
_ID = re.compile(r"^nsdsynthetic(\d{3})(?:_(subj\d{2}))?$")


def synthetic_betas_file(subject: str) -> Path:
    return (Path("nsddata_betas/ppdata") / subject / "func1pt8mm" / "nsdsyntheticbetas_fithrf_GLMdenoise_RR"
            / "betas_nsdsynthetic.hdf5")


def color_stimuli_file(subject: str) -> Path:
    return STIMULI_DIR / f"nsdsynthetic_colorstimuli_{subject}.hdf5"


def synthetic_stimulus_id(number: int, subject: str) -> str:
    """Id of 1-based stimulus ``number``; the subject-specific ones (221..284) carry the subject."""
    return f"nsdsynthetic{number:03d}" if number <= N_SHARED else f"nsdsynthetic{number:03d}_{subject}"


class NSDSyntheticDataset(NSDVolumeDataset):
    """NSD-synthetic betas per subject and region (test split only).

    Options: ``subjects``, ``regions``, ``hemisphere`` as for NSD; ``n_stimuli`` 220 (default) or 284; ``cache``.
    """

    name = "nsd_synthetic"
    test_only = True

    def __init__(self, root: str | Path, subjects: Any = None, regions: Any = None, hemisphere: str = "both",
                 n_stimuli: int = N_SHARED, cache: bool = True):
        try:
            self.n_stimuli = int(n_stimuli)
        except (TypeError, ValueError):
            self.n_stimuli = -1
        if self.n_stimuli not in (N_SHARED, N_ALL):
            raise DatasetError(f"nsd_synthetic: option n_stimuli must be {N_SHARED} or {N_ALL}, got {n_stimuli!r}")
        super().__init__(root, subjects=subjects, regions=regions, hemisphere=hemisphere, cache=cache)
        require_files(self.root, [DESIGN_FILE, STIMULI_FILE], self.name)
        for subject in self._subjects:
            require_files(self.root, self._subject_files(subject), self.name)
            if self.n_stimuli == N_ALL:
                require_files(self.root, [color_stimuli_file(subject)], self.name)
        self._check_design_and_images()

    def _present_subjects(self) -> list[str]:
        return [s for s in NSD_SUBJECTS if (self.root / synthetic_betas_file(s)).is_file()]

    def _example_betas(self) -> Path:
        return synthetic_betas_file("subj01")

    def _subject_files(self, subject: str) -> list[Path]:
        return [DESIGN_FILE] + self.atlas_files(subject) + [synthetic_betas_file(subject)]

    def _validity_files(self, subject: str) -> list[Path]:
        return [rel for rel in [brainmask_file(subject)] if (self.root / rel).is_file()]

    def _cache_options(self, subject: str) -> dict[str, Any]:
        return {"n_stimuli": self.n_stimuli, "validity": [p.as_posix() for p in self._validity_files(subject)]}

    @cached_property
    def trial_stimuli(self) -> np.ndarray:
        """0-based stimulus index (0..283) of every trial of the session."""
        order = read_mat_arrays(self.root / DESIGN_FILE, ["masterordering"], "nsd_synthetic design")["masterordering"]
        order = np.asarray(order).ravel().astype(np.int64)
        if order.size == 0 or order.min() < 1 or order.max() > N_ALL:
            raise DatasetError(f"nsd_synthetic: {DESIGN_FILE.as_posix()} masterordering holds values outside 1..{N_ALL}")
        shown = np.unique(order)
        if shown.size < self.n_stimuli or shown[self.n_stimuli - 1] != self.n_stimuli:
            raise DatasetError(f"nsd_synthetic: {DESIGN_FILE.as_posix()} does not show every stimulus 1..{self.n_stimuli}")
        return order - 1

    def _check_design_and_images(self) -> None:
        _ = self.trial_stimuli
        with open_hdf5(self.root / STIMULI_FILE, "nsd_synthetic stimuli") as handle:
            n_rows = hdf5_dataset(handle, "imgBrick", "nsd_synthetic stimuli").shape[0]
        if n_rows < N_SHARED:
            raise DatasetError(f"nsd_synthetic: {STIMULI_FILE.as_posix()} imgBrick has {n_rows} images, expected {N_SHARED}")

    # --- stimuli --------------------------------------------------------------------------------------------
    def test_numbers(self) -> np.ndarray:
        return np.arange(1, self.n_stimuli + 1)

    def stimulus_ids(self) -> list[str]:
        ids = [synthetic_stimulus_id(n, "") for n in range(1, N_SHARED + 1)]
        if self.n_stimuli == N_ALL:
            ids += [synthetic_stimulus_id(n, s) for s in self._subjects for n in range(N_SHARED + 1, N_ALL + 1)]
        return ids

    def load_image(self, image_id: str) -> Image.Image:
        match = _ID.match(str(image_id))
        if not match:
            raise DatasetError(f"nsd_synthetic: {image_id!r} is not a stimulus id (expected nsdsyntheticNNN[_subjNN])")
        number, subject = int(match.group(1)), match.group(2)
        if number <= N_SHARED and subject is None and number >= 1:
            path, row = STIMULI_FILE, number - 1
        elif N_SHARED < number <= N_ALL and subject is not None:
            path, row = color_stimuli_file(subject), number - N_SHARED - 1
        else:
            raise DatasetError(f"nsd_synthetic: no stimulus {image_id!r}; ids 221..284 need a subject suffix (_subjNN)")
        with open_hdf5(self.root / path, "nsd_synthetic stimuli") as handle:
            brick = hdf5_dataset(handle, "imgBrick", "nsd_synthetic stimuli")
            if row >= brick.shape[0]:
                raise DatasetError(f"nsd_synthetic: {path.as_posix()} has no row {row} for {image_id!r}")
            pixels = np.asarray(brick[row])
        return Image.fromarray(pixels.astype(np.uint8)).convert("RGB")

    # --- responses ------------------------------------------------------------------------------------------
    def _split_counts(self, subject: str) -> tuple[int, int, int]:
        counts = np.bincount(self.trial_stimuli, minlength=N_ALL)[: self.n_stimuli]
        return 0, self.n_stimuli, int(counts.max())

    def _check_betas(self, subject: str) -> None:
        check_betas_header(self.root / synthetic_betas_file(subject), self.trial_stimuli.size,
                           self.layout(subject).shape, self.name)

    def _preprocess(self, subject: str, layout: VolumeLayout) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        stimuli = self.trial_stimuli
        values = read_betas_voxels(self.root / synthetic_betas_file(subject), layout.union_xyz, stimuli.size,
                                   layout.shape, f"nsd_synthetic {subject}")
        z, bad = zscore_within_session(values)
        ncsnr = ncsnr_from_trials(z, stimuli)
        selected = stimuli < self.n_stimuli
        counts = np.bincount(stimuli[selected], minlength=self.n_stimuli)
        test = RepetitionAccumulator(self.n_stimuli, z.shape[1], max_repetitions=int(counts.max()))
        test.add(stimuli[selected], z[selected])
        test_mean = test.means()
        bad |= ~np.isfinite(test_mean).all(axis=0)
        union = {
            "train_ids": np.zeros(0, dtype="<U1"),
            "test_ids": np.array([synthetic_stimulus_id(n, subject) for n in self.test_numbers()], dtype=str),
            "train": np.zeros((0, z.shape[1]), dtype=np.float32),
            "test": test_mean,
            "test_repetitions": test.repetitions,
            "noise_ceiling": ceiling_from_ncsnr(ncsnr, counts),
            "bad": bad,
        }
        meta = {
            "preprocessing": "betas/300; z-score per voxel over the session's trials (ddof=0); mean over repetitions",
            "noise_ceiling_definition": "ncsnr from the session's repetitions (pooled within-stimulus variance); "
                                        "ncsnr^2 / (ncsnr^2 + mean over test stimuli of 1/n_repetitions)",
            "test_repetition_counts": counts.tolist(),
        }
        return union, meta
