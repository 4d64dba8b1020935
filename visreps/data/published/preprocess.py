"""Numeric preprocessing shared by the fMRI and electrophysiology readers.

- ``read_session_voxels``: the ROI voxels of one NSD-style beta file (h5py order (trials, Z, Y, X), int16 × 300),
  read in blocks of trials over the bounding box of the voxels, never the whole volume series at once.
- ``zscore_within_session``: per-voxel z-scoring over the trials of a session (ddof=0).
- ``RepetitionAccumulator``: per-stimulus sums (for repetition averages) and, optionally, every repetition.
- Noise ceilings: from NSD's ncsnr, or estimated from repetitions (same ncsnr definition).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from visreps.data.base import DatasetError
from visreps.data.published.matfile import hdf5_dataset, open_hdf5

#: NSD stores betas as int16 percent signal change × 300
NSD_BETA_SCALE = 300.0


def checked_betas(handle, path: str | Path, n_trials: int, volume_xyz: tuple[int, int, int], what: str):
    """The ``betas`` dataset of an open session file, checked: integer, h5py shape (n_trials, Z, Y, X)."""
    betas = hdf5_dataset(handle, "betas", what)
    expected = (n_trials, *volume_xyz[::-1])
    if betas.shape != expected:
        raise DatasetError(
            f"{what}: {path} dataset 'betas' has shape {betas.shape}, expected {expected} "
            f"(trials, Z, Y, X) matching the masks' (X, Y, Z) = {volume_xyz}"
        )
    if betas.dtype.kind not in "iu":
        raise DatasetError(
            f"{what}: {path} dataset 'betas' is {betas.dtype}, expected int16 (percent signal change × 300)"
        )
    return betas


def read_session_voxels(
    path: str | Path,
    xyz: np.ndarray,
    n_trials: int,
    volume_xyz: tuple[int, int, int],
    what: str,
    block_bytes: int = 256 * 2**20,
) -> np.ndarray:
    """(n_trials, n_voxels) float32 betas in percent signal change of the voxels ``xyz`` ((n, 3) X, Y, Z indices).

    The file's dataset ``betas`` must be integer with h5py shape (n_trials, Z, Y, X), the reverse of the NIfTI
    (X, Y, Z) order of the masks. Only the bounding box of ``xyz`` is read, ``block_bytes`` at a time.
    """
    xyz = np.asarray(xyz, dtype=np.int64).reshape(-1, 3)
    with open_hdf5(path, what) as handle:
        betas = checked_betas(handle, path, n_trials, volume_xyz, what)
        out = np.empty((n_trials, len(xyz)), dtype=np.float32)
        if len(xyz) == 0:
            return out
        low = xyz.min(axis=0)
        high = xyz.max(axis=0) + 1
        x, y, z = (xyz - low).T
        box = (slice(low[2], high[2]), slice(low[1], high[1]), slice(low[0], high[0]))
        per_trial = int(np.prod(high - low)) * betas.dtype.itemsize
        step = max(1, block_bytes // max(per_trial, 1))
        try:
            for start in range(0, n_trials, step):
                stop = min(start + step, n_trials)
                block = betas[(slice(start, stop), *box)]
                out[start:stop] = block[:, z, y, x]
        except OSError as error:
            raise DatasetError(f"{what}: reading {path} failed ({error}); the file is truncated or corrupt") from None
    out /= NSD_BETA_SCALE
    return out


def zscore_within_session(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score each column over the rows (trials of one session, ddof=0).

    Returns (z float32, bad) where ``bad`` marks columns that are constant or non-finite in this session;
    their z-scores are NaN so that they can never pass as data.
    """
    values64 = values.astype(np.float64, copy=False)
    mean = values64.mean(axis=0)
    std = values64.std(axis=0)
    bad = ~np.isfinite(mean) | ~np.isfinite(std) | (std <= 1e-12 * np.maximum(1.0, np.abs(mean)))
    safe_std = np.where(bad, 1.0, std)
    z = ((values64 - mean) / safe_std).astype(np.float32)
    z[:, bad] = np.nan
    return z, bad


def occurrence_index(rows: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same value (0 for a first occurrence)."""
    rows = np.asarray(rows)
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, rows.size]))
    out = np.empty(rows.size, dtype=np.int64)
    out[order] = np.arange(rows.size) - run_start
    return out


class RepetitionAccumulator:
    """Single-trial responses gathered per stimulus row: sums and counts, and every repetition if asked.

    ``max_repetitions=None`` keeps only sums (train splits of NSD: memory); otherwise ``repetitions``
    is (n_stimuli, max_repetitions, n_units) float32, NaN where a stimulus was shown fewer times.
    """

    def __init__(self, n_stimuli: int, n_units: int, max_repetitions: int | None = None):
        self.sums = np.zeros((n_stimuli, n_units), dtype=np.float32)
        self.counts = np.zeros(n_stimuli, dtype=np.int64)
        self.repetitions = (
            None if max_repetitions is None
            else np.full((n_stimuli, max_repetitions, n_units), np.nan, dtype=np.float32)
        )

    def add(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Add trials: ``values[i]`` is a response to stimulus row ``rows[i]``."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        occurrence = occurrence_index(rows)
        for k in range(int(occurrence.max()) + 1):
            chosen = occurrence == k
            self.sums[rows[chosen]] += values[chosen]
        if self.repetitions is not None:
            slots = self.counts[rows] + occurrence
            if slots.max() >= self.repetitions.shape[1]:
                raise ValueError(f"more than {self.repetitions.shape[1]} repetitions of a stimulus")
            self.repetitions[rows, slots] = values
        self.counts += np.bincount(rows, minlength=self.counts.size)

    def means(self) -> np.ndarray:
        """(n_stimuli, n_units) repetition averages (NaN rows for stimuli never shown)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.sums / self.counts[:, None]).astype(np.float32)


def ceiling_from_ncsnr(ncsnr: np.ndarray, repetition_counts: np.ndarray) -> np.ndarray:
    """Explainable-variance fraction of repetition averages: ncsnr² / (ncsnr² + mean(1 / n_reps)).

    ``repetition_counts``: trials averaged per test stimulus (NSD convention, Allen et al. 2022).
    """
    counts = np.asarray(repetition_counts, dtype=np.float64)
    if counts.size == 0 or np.any(counts < 1):
        raise ValueError("every stimulus needs at least one repetition for a noise ceiling")
    norm = float(np.mean(1.0 / counts))
    signal = np.asarray(ncsnr, dtype=np.float64) ** 2
    return (signal / (signal + norm)).astype(np.float32)


def ncsnr_from_variances(noise_var: np.ndarray, total_var: np.ndarray) -> np.ndarray:
    """ncsnr = sqrt(max(0, total − noise) / noise) per unit (NaN where the noise variance is 0)."""
    signal = np.clip(total_var - noise_var, 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(signal / noise_var)
    return np.where(noise_var > 0, out, np.nan).astype(np.float32)


def ncsnr_from_trials(values: np.ndarray, stimulus_of_trial: np.ndarray) -> np.ndarray:
    """ncsnr per unit from single trials (n_trials, n_units) labelled by stimulus.

    Noise variance: within-stimulus variance pooled over stimuli (ddof=1 each, weighted by n−1);
    total variance: over all trials (ddof=1); signal variance = total − noise, clipped at 0.
    """
    labels, inverse = np.unique(stimulus_of_trial, return_inverse=True)
    onehot = np.zeros((labels.size, len(values)), dtype=np.float64)
    onehot[inverse, np.arange(len(values))] = 1.0
    values64 = values.astype(np.float64)
    counts = onehot.sum(axis=1)
    sums = onehot @ values64
    squares = onehot @ values64**2
    dof = float(np.sum(counts - 1))
    if dof <= 0:
        raise ValueError("no stimulus was repeated: a noise ceiling needs repetitions")
    noise = (squares - sums**2 / counts[:, None]).sum(axis=0) / dof
    total = values64.var(axis=0, ddof=1)
    return ncsnr_from_variances(noise, total)


def ceiling_from_repetitions(repetitions: np.ndarray) -> np.ndarray:
    """Explainable-variance fraction of repetition averages from (n_stimuli, n_reps, n_units), NaN-padded."""
    reps = np.asarray(repetitions, dtype=np.float64)
    finite = np.isfinite(reps)
    counts = finite.sum(axis=1)  # (n_stimuli, n_units)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.nansum(reps, axis=1) / counts
        deviations = np.where(finite, reps - means[:, None, :], 0.0)
        noise = (deviations**2).sum(axis=(0, 1)) / np.clip(counts - 1, 0, None).sum(axis=0)
        trials = np.where(finite, reps, np.nan)
        total = np.nanvar(trials.reshape(-1, reps.shape[2]), axis=0, ddof=1)
        norm = np.mean(1.0 / counts, axis=0)
    ncsnr2 = ncsnr_from_variances(noise, total).astype(np.float64) ** 2
    return (ncsnr2 / (ncsnr2 + norm)).astype(np.float32)
