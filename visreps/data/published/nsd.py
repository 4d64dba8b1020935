"""The Natural Scenes Dataset (Allen et al. 2022) read from its published layout.

Root = the folder holding ``nsddata/``, ``nsddata_betas/`` and ``nsddata_stimuli/``. Per subject:
session betas ``nsddata_betas/ppdata/subjNN/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionSS.hdf5``
(int16 ÷ 300, h5py shape (750, Z, Y, X)), ncsnr ``.../ncsnr.nii.gz``, ROI atlases and label tables,
optional ``brainmask.nii.gz`` / ``valid_sessionSS.nii.gz``. Design: ``nsd_expdesign.mat`` or
``nsd_stim_info_merged.csv``. Images: ``nsd_stimuli.hdf5`` (``imgBrick``, row = nsdId), needed only for images:
responses open without it. Betas are read voxel by voxel (``nsd_read``), only the regions' valid voxels.

Sessions: by default every session present per subject; a gap (a session missing below the highest present)
is an error unless ``sessions`` names the sessions on purpose, since it would shrink the splits unnoticed.

Preprocessing: each voxel z-scored within each session over its 750 trials, then the repetitions of each
image averaged. Split per subject: train = its non-shared images, test = the shared images it saw (in the
loaded sessions) — never dependent on the other subjects. Stimulus ids are ``nsd%05d`` of the 0-based nsdId.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from visreps.data.base import DatasetError, Responses
from visreps.data.published.matfile import hdf5_dataset, open_hdf5, read_mat_arrays
from visreps.data.published.nifti import load_volume
from visreps.data.published.nsd_volumes import (NSD_SESSIONS, NSD_SUBJECTS, NSDVolumeDataset, VolumeLayout, brainmask_file,
                                      check_betas_header, func_dir, require_files)
from visreps.data.published.nsd_read import read_betas_voxels
from visreps.data.published.preprocess import RepetitionAccumulator, ceiling_from_ncsnr, zscore_within_session

TRIALS_PER_SESSION = 750
EXPDESIGN_FILE = Path("nsddata/experiments/nsd/nsd_expdesign.mat")
STIM_INFO_FILE = Path("nsddata/experiments/nsd/nsd_stim_info_merged.csv")
STIMULI_FILE = Path("nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5")


def betas_dir(subject: str) -> Path:
    return Path("nsddata_betas/ppdata") / subject / "func1pt8mm" / "betas_fithrf_GLMdenoise_RR"


def session_file(subject: str, session: int) -> Path:
    return betas_dir(subject) / f"betas_session{session:02d}.hdf5"


def nsd_stimulus_id(nsd_id: int) -> str:
    return f"nsd{int(nsd_id):05d}"


@dataclass(frozen=True)
class NSDDesign:
    """Trial -> image of every subject (0-based nsdId, -1 where unknown) and the shared images."""

    trial_images: dict[str, np.ndarray]
    shared: np.ndarray
    source: str


def read_expdesign(path: Path) -> NSDDesign:
    """``masterordering`` (trial -> column of ``subjectim``), ``subjectim`` (subject × image, 1-based nsdIds), ``sharedix``."""
    arrays = read_mat_arrays(path, ["masterordering", "subjectim", "sharedix"], "nsd design")
    order = np.asarray(arrays["masterordering"]).ravel().astype(np.int64)
    subjectim = np.asarray(arrays["subjectim"]).astype(np.int64)
    if subjectim.ndim != 2 or subjectim.shape[0] != len(NSD_SUBJECTS):
        raise DatasetError(f"nsd design: {path} subjectim has shape {subjectim.shape}, expected (8, images)")
    if order.size == 0 or order.min() < 1 or order.max() > subjectim.shape[1]:
        raise DatasetError(f"nsd design: {path} masterordering holds values outside 1..{subjectim.shape[1]}")
    trials = {subject: subjectim[i, order - 1] - 1 for i, subject in enumerate(NSD_SUBJECTS)}
    shared = np.unique(np.asarray(arrays["sharedix"]).ravel().astype(np.int64) - 1)
    return NSDDesign(trials, shared, EXPDESIGN_FILE.as_posix())


def read_stim_info(path: Path) -> NSDDesign:
    """``nsdId``, ``shared1000`` and ``subjectS_repR`` (1-based global trial number, 0 = not shown) columns."""
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DatasetError(f"nsd design: cannot read {path} as CSV ({error})") from None
    needed = ["nsdId", "shared1000"] + [f"subject{s}_rep{r}" for s in range(1, 9) for r in range(3)]
    missing = [column for column in needed if column not in table.columns]
    if missing:
        raise DatasetError(f"nsd design: {path} lacks the column {missing[0]!r} (and {len(missing) - 1} more)")
    nsd_ids = table["nsdId"].to_numpy(dtype=np.int64)
    n_trials = TRIALS_PER_SESSION * max(NSD_SESSIONS.values())
    trials: dict[str, np.ndarray] = {}
    for s, subject in enumerate(NSD_SUBJECTS, start=1):
        images = np.full(n_trials, -1, dtype=np.int64)
        for r in range(3):
            numbers = table[f"subject{s}_rep{r}"].to_numpy(dtype=np.int64)
            shown = numbers > 0
            if numbers.max(initial=0) > n_trials:
                raise DatasetError(f"nsd design: {path} subject{s}_rep{r} has trial numbers above {n_trials}")
            images[numbers[shown] - 1] = nsd_ids[shown]
        trials[subject] = images
    shared_flag = table["shared1000"].astype(str).str.strip().str.lower().isin(["true", "1", "1.0"])
    return NSDDesign(trials, np.unique(nsd_ids[shared_flag.to_numpy()]), STIM_INFO_FILE.as_posix())


class NSDDataset(NSDVolumeDataset):
    """NSD betas per subject and region.

    Options: ``subjects`` (default: those with beta files), ``sessions`` (list of 1-based session numbers,
    default all present per subject; validated against 40,40,32,30,40,32,40,30), ``regions`` (default early,
    ventral, V1, V2, V3, hV4, FFA, PPA; or ``atlas:label[+label]``), ``hemisphere`` (both|lh|rh),
    ``design`` (auto|expdesign|stim_info), ``noise_ceiling`` (read ncsnr.nii.gz, default True), ``cache``.
    """

    name = "nsd"

    def __init__(self, root: str | Path, subjects: Any = None, sessions: Any = None, regions: Any = None,
                 hemisphere: str = "both", design: str = "auto", noise_ceiling: bool = True, cache: bool = True):
        root_path = Path(root).expanduser()
        if design not in ("auto", "expdesign", "stim_info"):
            raise DatasetError(f"nsd: option design must be auto, expdesign or stim_info, got {design!r}")
        if design == "auto" and root_path.is_dir() and not any((root_path / f).is_file() for f in (EXPDESIGN_FILE, STIM_INFO_FILE)):
            raise DatasetError(f"nsd: missing file {EXPDESIGN_FILE.as_posix()} (expected at {root_path / EXPDESIGN_FILE}; "
                               f"{STIM_INFO_FILE.as_posix()} would do as well): the NSD design gives trial -> image")
        if design == "auto":
            design = "stim_info" if (root_path / STIM_INFO_FILE).is_file() and not (root_path / EXPDESIGN_FILE).is_file() else "expdesign"
        self.design_file = EXPDESIGN_FILE if design == "expdesign" else STIM_INFO_FILE
        self.noise_ceiling = bool(noise_ceiling)
        self._requested_sessions = None if sessions is None else _session_list(sessions)
        super().__init__(root, subjects=subjects, regions=regions, hemisphere=hemisphere, cache=cache)
        self.sessions = {subject: self._sessions_of(subject) for subject in self._subjects}
        self._check_session_gaps()
        require_files(self.root, [self.design_file], self.name)
        for subject in self._subjects:
            require_files(self.root, self._subject_files(subject), self.name)
        self._check_design_and_images()

    # --- layout ---------------------------------------------------------------------------------------------
    def _present_subjects(self) -> list[str]:
        return [s for s in NSD_SUBJECTS if any((self.root / session_file(s, n)).is_file()
                                               for n in range(1, NSD_SESSIONS[s] + 1))]

    def _example_betas(self) -> Path:
        return session_file("subj01", 1)

    def _sessions_of(self, subject: str) -> list[int]:
        published = NSD_SESSIONS[subject]
        if self._requested_sessions is None:
            present = [n for n in range(1, published + 1) if (self.root / session_file(subject, n)).is_file()]
            if not present:
                raise DatasetError(f"nsd: missing file {session_file(subject, 1).as_posix()} (expected at "
                                   f"{self.root / session_file(subject, 1)}); {subject} has no beta session")
            return present
        beyond = [n for n in self._requested_sessions if not 1 <= n <= published]
        if beyond:
            raise DatasetError(f"nsd: {subject} has sessions 1..{published}; option sessions asks for {beyond}")
        return list(self._requested_sessions)

    def missing_sessions(self, subject: str) -> list[int]:
        """Sessions absent below the highest loaded one (a gap; empty when ``sessions`` was given)."""
        if self._requested_sessions is not None:
            return []
        used = self.sessions[subject]
        return sorted(set(range(1, max(used) + 1)) - set(used))

    def _check_session_gaps(self) -> None:
        parts, example = [], ""
        for subject in self._subjects:
            missing = self.missing_sessions(subject)
            if missing:
                files = ", ".join(session_file(subject, n).name for n in missing[:5])
                files += f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                example = example or number_ranges(self.sessions[subject]).replace(" ", "")
                parts.append(f"{subject} has sessions {number_ranges(self.sessions[subject])} of "
                             f"{NSD_SESSIONS[subject]} but lacks {files} (expected in {self.root / betas_dir(subject)})")
        if parts:
            raise DatasetError(
                f"nsd: missing session file(s): {'; '.join(parts)}. A gap would silently shrink the train/test "
                "split: download the missing file(s), or choose the sessions on purpose with the option sessions "
                f"(e.g. sessions={example}), or leave the subject out with the option subjects")

    def _subject_files(self, subject: str) -> list[Path]:
        files = [self.design_file] + self.atlas_files(subject)
        if self.noise_ceiling:
            files.append(betas_dir(subject) / "ncsnr.nii.gz")
        return files + [session_file(subject, n) for n in self.sessions[subject]]

    def _validity_files(self, subject: str) -> list[Path]:
        candidates = [brainmask_file(subject)]
        candidates += [func_dir(subject) / f"valid_session{n:02d}.nii.gz" for n in self.sessions[subject]]
        return [rel for rel in candidates if (self.root / rel).is_file()]

    def _cache_options(self, subject: str) -> dict[str, Any]:
        return {"sessions": self.sessions[subject], "noise_ceiling": self.noise_ceiling,
                "validity": [p.as_posix() for p in self._validity_files(subject)]}

    # --- design ---------------------------------------------------------------------------------------------
    @cached_property
    def design(self) -> NSDDesign:
        path = self.root / self.design_file
        return read_expdesign(path) if self.design_file == EXPDESIGN_FILE else read_stim_info(path)

    def trial_images(self, subject: str) -> np.ndarray:
        """0-based nsdIds of the loaded trials of ``subject`` (sessions in order, 750 trials each)."""
        images = self.design.trial_images[subject]
        out = []
        for n in self.sessions[subject]:
            part = images[(n - 1) * TRIALS_PER_SESSION: n * TRIALS_PER_SESSION]
            if part.size < TRIALS_PER_SESSION or np.any(part < 0):
                raise DatasetError(f"nsd: {self.design_file.as_posix()} gives no image for some trials of "
                                   f"{subject} session {n}; the design file is incomplete")
            out.append(part)
        return np.concatenate(out)

    def split(self, subject: str) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) 0-based nsdIds, sorted: non-shared / shared images seen in the loaded sessions."""
        seen = np.unique(self.trial_images(subject))
        is_shared = np.isin(seen, self.design.shared)
        return seen[~is_shared], seen[is_shared]

    @property
    def has_images(self) -> bool:
        """Whether ``nsd_stimuli.hdf5`` is present (responses never need it; images do)."""
        return (self.root / STIMULI_FILE).is_file()

    def _require_images(self) -> None:
        if not self.has_images:
            raise DatasetError(
                f"nsd: missing file {STIMULI_FILE.as_posix()} (expected at {self.root / STIMULI_FILE}): the NSD "
                "images (imgBrick, 39 GB) are needed for images and activations, not for responses; download it there")

    def _check_design_and_images(self) -> None:
        self._n_images: int | None = None
        if not self.has_images:
            return
        with open_hdf5(self.root / STIMULI_FILE, "nsd stimuli") as handle:
            brick = hdf5_dataset(handle, "imgBrick", "nsd stimuli")
            if brick.ndim != 4 or brick.shape[3] != 3:
                raise DatasetError(f"nsd: {STIMULI_FILE.as_posix()} imgBrick has shape {brick.shape}, expected (73000, 425, 425, 3)")
            self._n_images = int(brick.shape[0])
        for subject in self._subjects:
            highest = int(self.trial_images(subject).max())
            if highest >= self._n_images:
                raise DatasetError(f"nsd: the design shows nsdId {highest} to {subject} but imgBrick of "
                                   f"{STIMULI_FILE.as_posix()} has {self._n_images} images")

    # --- stimuli --------------------------------------------------------------------------------------------
    def stimulus_ids(self) -> list[str]:
        seen = np.unique(np.concatenate([self.trial_images(s) for s in self._subjects]))
        return [nsd_stimulus_id(i) for i in seen]

    def load_image(self, image_id: str) -> Image.Image:
        text = str(image_id)
        if not (text.startswith("nsd") and text[3:].isdigit()):
            raise DatasetError(f"nsd: {image_id!r} is not an NSD stimulus id (expected 'nsd' + 5-digit nsdId)")
        self._require_images()
        if self._n_images is None:  # the file appeared after the dataset was opened
            self._check_design_and_images()
        row = int(text[3:])
        if row >= self._n_images:
            raise DatasetError(f"nsd: {image_id!r} is beyond the {self._n_images} images of {STIMULI_FILE.as_posix()}")
        with open_hdf5(self.root / STIMULI_FILE, "nsd stimuli") as handle:
            pixels = np.asarray(handle["imgBrick"][row])
        return Image.fromarray(pixels.astype(np.uint8)).convert("RGB")

    # --- responses ------------------------------------------------------------------------------------------
    def responses(self, subject: str, region: str) -> Responses:
        """As ``NSDVolumeDataset.responses``; ``info`` also says how many sessions were published."""
        out = super().responses(subject, region)
        out.info["sessions_published"] = NSD_SESSIONS[subject]
        return out

    def summary(self, deep: bool = False) -> dict[str, Any]:
        """As ``NSDVolumeDataset.summary`` plus ``sessions`` per subject (used, published) and ``images``."""
        out = super().summary(deep=deep)
        out["sessions"] = {s: {"used": list(self.sessions[s]), "published": NSD_SESSIONS[s]} for s in self._subjects}
        out["images"] = STIMULI_FILE.as_posix() if self.has_images else None
        for subject in self._subjects:
            used, published = self.sessions[subject], NSD_SESSIONS[subject]
            if self._requested_sessions is None and len(used) < published:
                out["warnings"].append(f"{subject}: {len(used)} of {published} published sessions present "
                                       f"({number_ranges(used)}); its train/test split uses only these")
        if not self.has_images:
            out["warnings"].append(f"{STIMULI_FILE.as_posix()} is missing (expected at {self.root / STIMULI_FILE}): "
                                   "responses are available, images (activations) are not")
        return out

    def _split_counts(self, subject: str) -> tuple[int, int, int]:
        train, test = self.split(subject)
        trials = self.trial_images(subject)
        counts = np.unique(trials[np.isin(trials, test)], return_counts=True)[1]
        return int(train.size), int(test.size), int(counts.max(initial=0))

    def _check_betas(self, subject: str) -> None:
        shape = self.layout(subject).shape
        for n in self.sessions[subject]:
            check_betas_header(self.root / session_file(subject, n), TRIALS_PER_SESSION, shape, self.name)

    def _preprocess(self, subject: str, layout: VolumeLayout) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        train_ids, test_ids = self.split(subject)
        trials = self.trial_images(subject)
        n_lookup = int(trials.max()) + 1
        lookup_train = np.full(n_lookup, -1, dtype=np.int64)
        lookup_train[train_ids] = np.arange(train_ids.size)
        lookup_test = np.full(n_lookup, -1, dtype=np.int64)
        lookup_test[test_ids] = np.arange(test_ids.size)
        test_counts = np.bincount(lookup_test[trials][lookup_test[trials] >= 0], minlength=test_ids.size)
        n_units = len(layout.union_xyz)
        train = RepetitionAccumulator(train_ids.size, n_units)
        test = RepetitionAccumulator(test_ids.size, n_units, max_repetitions=int(test_counts.max(initial=1)))
        bad = np.zeros(n_units, dtype=bool)
        sessions = self.sessions[subject]
        for position, n in enumerate(tqdm(sessions, desc=f"nsd {subject} sessions", disable=None)):
            values = read_betas_voxels(self.root / session_file(subject, n), layout.union_xyz,
                                         TRIALS_PER_SESSION, layout.shape, f"nsd {subject} session {n}")
            z, constant = zscore_within_session(values)
            bad |= constant
            images = trials[position * TRIALS_PER_SESSION:(position + 1) * TRIALS_PER_SESSION]
            for lookup, accumulator in ((lookup_train, train), (lookup_test, test)):
                rows = lookup[images]
                accumulator.add(rows[rows >= 0], z[rows >= 0])
        train_mean, test_mean = train.means(), test.means()
        bad |= ~np.isfinite(train_mean).all(axis=0) | ~np.isfinite(test_mean).all(axis=0)
        with_ceiling = self.noise_ceiling and test_ids.size > 0
        if with_ceiling:
            ncsnr = load_volume(self.root / betas_dir(subject) / "ncsnr.nii.gz", f"nsd {subject} ncsnr")
            if ncsnr.shape[:3] != layout.shape:
                raise DatasetError(f"nsd: {betas_dir(subject).as_posix()}/ncsnr.nii.gz has shape {ncsnr.shape}, "
                                   f"the ROI atlases {layout.shape}")
            ceiling = ceiling_from_ncsnr(ncsnr.reshape(layout.shape)[tuple(layout.union_xyz.T)], test.counts)
        else:
            ceiling = np.full(n_units, np.nan, dtype=np.float32)
        union = {
            "train_ids": np.array([nsd_stimulus_id(i) for i in train_ids], dtype=str).reshape(-1),
            "test_ids": np.array([nsd_stimulus_id(i) for i in test_ids], dtype=str).reshape(-1),
            "train": train_mean, "test": test_mean, "test_repetitions": test.repetitions,
            "noise_ceiling": ceiling, "bad": bad,
        }
        meta = {
            "sessions": sessions,
            "design_source": self.design_file.as_posix(),
            "preprocessing": "betas/300; z-score per voxel within session (ddof=0); mean over repetitions",
            "noise_ceiling_definition": "ncsnr^2 / (ncsnr^2 + mean over test images of 1/n_repetitions)"
            if with_ceiling else "none",
            "test_repetition_counts": test.counts.tolist(),
        }
        return union, meta


def number_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    values = sorted(int(n) for n in numbers)
    starts = [n for k, n in enumerate(values) if k == 0 or values[k - 1] != n - 1]
    ends = [n for k, n in enumerate(values) if k == len(values) - 1 or values[k + 1] != n + 1]
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in zip(starts, ends))


def _session_list(value: Any) -> list[int]:
    """Sessions from a list, one number, or a string such as '1,2,5' or '1-4'."""
    items: list[Any]
    if isinstance(value, str):
        items = []
        for part in value.replace(" ", "").split(","):
            if "-" in part:
                first, _, last = part.partition("-")
                items.extend(range(int(first), int(last) + 1))
            elif part:
                items.append(part)
    elif isinstance(value, (int, np.integer)):
        items = [value]
    else:
        items = list(value)
    try:
        sessions = sorted({int(v) for v in items})
    except (TypeError, ValueError):
        raise DatasetError(f"nsd: option sessions must list session numbers (e.g. [1, 2] or '1-4'), got {value!r}") from None
    if not sessions:
        raise DatasetError("nsd: option sessions is empty")
    return sessions
