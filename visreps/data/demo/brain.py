"""Responses of the demo dataset: ground-truth features, subject-specific voxel mixing, noise, behaviour.

- "early": local oriented energy of the pixels. Luminance at 64 x 64, a complex Gabor bank
  (4 orientations x 2 wavelengths, quadrature pairs), amplitude averaged on a 4 x 4 grid -> 128 features.
- "ventral": the object latents through a nonlinearity. A hierarchical class code (shape family +
  shape + colour family vectors) plus a few continuous latents, projected and rectified -> 64 features.
- voxels: a fixed linear mixing of one region's features per subject (early: pRF-like spatial pooling of
  non-negative channel weights; ventral: sparse Gaussian weights), z-scored over the subject's stimuli,
  times a per-voxel gain, plus independent Gaussian noise on every repetition.
- behaviour: a non-negative concept embedding from the class structure (THINGS-like).
Every random draw comes from ``stream(seed, ...)``; docs/demo_data.md states the model in full.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import scipy.fft
from PIL import Image

from visreps.data.demo.images import (
    HUE_JITTER, LATENT_RANGES, N_COLOUR_FAMILIES, N_FINE, N_SHAPE_FAMILIES, N_SHAPES,
    COLOUR_HUES, fine_class,
)

ANALYSIS_SIZE = 64
GABOR_PAD = 16
GABOR_ORIENTATIONS_DEG = (0.0, 45.0, 90.0, 135.0)
GABOR_WAVELENGTHS = (8.0, 16.0)  # pixels at ANALYSIS_SIZE
GABOR_SIGMA_PER_WAVELENGTH = 0.5
POOL_GRID = 4
N_EARLY_FEATURES = len(GABOR_ORIENTATIONS_DEG) * len(GABOR_WAVELENGTHS) * POOL_GRID * POOL_GRID
CLASS_CODE_DIM = 16
N_VENTRAL_FEATURES = 64
#: weights of the class-code parts (shape family, shape, colour family) and of the continuous latents
VENTRAL_CODE_WEIGHTS = {"shape_family": 1.0, "shape": 0.8, "colour_family": 0.9}
VENTRAL_CONTINUOUS_WEIGHT = 0.5
VOXEL_GAIN_RANGE = (0.6, 1.4)
REGIONS = ("early", "ventral")

# stream ids of the random draws (never reuse one for another purpose)
STREAM_TRAIN_IMAGES, STREAM_BRAIN_STIMULI, STREAM_BEHAVIOUR_STIMULI = 1, 2, 3
STREAM_VENTRAL_MODEL, STREAM_BEHAVIOUR_EMBEDDING, STREAM_SUBJECT = 4, 5, 10
PURPOSE_MIXING, PURPOSE_GAIN, PURPOSE_NOISE = 0, 1, 2

#: per shape (0..15): roundness, corners (0..1), elongation, spikiness — the "semantic" shape attributes
SHAPE_ATTRIBUTES = np.array([
    [1.0, 0.0, 0.0, 0.0], [0.8, 0.0, 0.6, 0.0], [0.9, 0.0, 0.0, 0.0], [0.6, 0.33, 0.3, 0.0],
    [0.1, 0.5, 0.0, 0.3], [0.2, 0.67, 0.0, 0.0], [0.4, 0.83, 0.0, 0.0], [0.6, 1.0, 0.0, 0.0],
    [0.0, 0.5, 0.0, 0.8], [0.0, 0.67, 0.0, 0.9], [0.0, 0.83, 0.0, 1.0], [0.1, 1.0, 0.0, 1.0],
    [0.0, 0.67, 1.0, 0.0], [0.0, 1.0, 0.4, 0.3], [0.0, 1.0, 0.5, 0.2], [0.0, 1.0, 0.5, 0.2],
])


def stream(seed: int, *purpose: int) -> np.random.Generator:
    """The random generator of one purpose (ids above) under the dataset seed."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, purpose)]))


# ---------------------------------------------------------------- early: oriented energy


def early_feature_names() -> list[str]:
    """Names of the 128 early features, in column order (orientation, wavelength, grid row, grid col)."""
    return [
        f"ori{int(o)}_wl{int(w)}_r{r}_c{c}"
        for o in GABOR_ORIENTATIONS_DEG for w in GABOR_WAVELENGTHS
        for r in range(POOL_GRID) for c in range(POOL_GRID)
    ]


@functools.lru_cache(maxsize=1)
def gabor_bank() -> np.ndarray:
    """Fourier transforms (n_filters, N, N) complex128 of the complex Gabor kernels (N = 64 + 2 * pad).

    Kernel: Gaussian envelope (sigma = 0.5 wavelength) times exp(2 pi i x_theta / wavelength), with the
    envelope-weighted mean removed (no response to uniform luminance) and unit L1 norm.
    """
    n = ANALYSIS_SIZE + 2 * GABOR_PAD
    offsets = np.fft.fftfreq(n, 1.0 / n)  # 0, 1, ..., -1: kernel centred on pixel (0, 0)
    y, x = np.meshgrid(offsets, offsets, indexing="ij")
    kernels = []
    for orientation in np.deg2rad(GABOR_ORIENTATIONS_DEG):
        along = x * np.cos(orientation) + y * np.sin(orientation)
        for wavelength in GABOR_WAVELENGTHS:
            sigma = GABOR_SIGMA_PER_WAVELENGTH * wavelength
            envelope = np.exp(-(x**2 + y**2) / (2 * sigma**2))
            kernel = envelope * np.exp(2j * np.pi * along / wavelength)
            kernel -= envelope * (kernel.sum() / envelope.sum())
            kernels.append(np.fft.fft2(kernel / np.abs(kernel).sum()))
    return np.stack(kernels)


def luminance(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (n, S, S, 3) -> luminance (n, 64, 64) float32 in 0..1 (Rec. 601 weights, bilinear resize)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (n, height, width, 3) uint8, got shape {images.shape}")
    lum = (images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0
    if lum.shape[1:] == (ANALYSIS_SIZE, ANALYSIS_SIZE):
        return lum
    size = (ANALYSIS_SIZE, ANALYSIS_SIZE)
    return np.stack([np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))
                     for frame in lum])


def early_features(images: np.ndarray, chunk: int = 128) -> np.ndarray:
    """Ground-truth early features (n, 128) float64 of uint8 RGB images (n, S, S, 3).

    Gabor amplitude |I * g| (reflect-padded luminance, circular FFT convolution on the padded frame),
    taken at every second pixel of the 64 x 64 image and averaged over the 8 x 8 samples of each cell of
    a 4 x 4 grid. The stride-2 samples come exactly from the folded spectrum (a 48 x 48 inverse FFT).
    """
    bank = gabor_bank().astype(np.complex64)
    half = (ANALYSIS_SIZE + 2 * GABOR_PAD) // 2
    inner = slice(GABOR_PAD // 2, (GABOR_PAD + ANALYSIS_SIZE) // 2)
    samples = ANALYSIS_SIZE // 2 // POOL_GRID
    out = np.empty((len(images), N_EARLY_FEATURES), dtype=np.float64)
    for start in range(0, len(images), chunk):
        lum = luminance(images[start:start + chunk])
        n = len(lum)
        padded = np.pad(lum, ((0, 0), (GABOR_PAD, GABOR_PAD), (GABOR_PAD, GABOR_PAD)), mode="reflect")
        spectrum = scipy.fft.fft2(padded)
        pooled = []
        for kernel in bank:
            product = spectrum * kernel
            # sampling every 2nd pixel <=> summing the four half-size blocks of the spectrum (and / 4)
            folded = product[:, :half, :half] + product[:, half:, :half] + product[:, :half, half:] \
                + product[:, half:, half:]
            amplitude = np.abs(scipy.fft.ifft2(folded)[:, inner, inner]) * 0.25
            cells = amplitude.reshape(n, POOL_GRID, samples, POOL_GRID, samples).mean(axis=(2, 4))
            pooled.append(cells.reshape(n, -1))
        out[start:start + n] = np.concatenate(pooled, axis=1)
    return out


# ---------------------------------------------------------------- ventral: latents through a nonlinearity


@functools.lru_cache(maxsize=8)
def ventral_model(seed: int) -> dict[str, np.ndarray]:
    """The fixed parameters of the ventral features under ``seed``: class-code vectors and projection."""
    rng = stream(seed, STREAM_VENTRAL_MODEL)
    model = {
        "shape_family": rng.standard_normal((N_SHAPE_FAMILIES, CLASS_CODE_DIM)),
        "shape": rng.standard_normal((N_SHAPES, CLASS_CODE_DIM)),
        "colour_family": rng.standard_normal((N_COLOUR_FAMILIES, CLASS_CODE_DIM)),
    }
    n_inputs = CLASS_CODE_DIM + 4
    model["projection"] = rng.standard_normal((n_inputs, N_VENTRAL_FEATURES)) / np.sqrt(n_inputs)
    return model


def ventral_inputs(latents: pd.DataFrame, seed: int) -> np.ndarray:
    """(n, 20) inputs of the ventral nonlinearity: class code (16) and 4 scaled continuous latents."""
    model = ventral_model(seed)
    code = sum(weight * model[part][latents[part].to_numpy(dtype=np.int64)]
               for part, weight in VENTRAL_CODE_WEIGHTS.items())
    centre = np.asarray(COLOUR_HUES)[latents["colour_family"].to_numpy(dtype=np.int64)]
    hue_offset = (latents["hue"].to_numpy() - centre + 180.0) % 360.0 - 180.0
    low, high = LATENT_RANGES["scale"]
    continuous = np.stack([
        hue_offset / HUE_JITTER,
        (latents["scale"].to_numpy() - (low + high) / 2) / ((high - low) / 2),
        latents["x"].to_numpy() / LATENT_RANGES["x"][1],
        latents["y"].to_numpy() / LATENT_RANGES["y"][1],
    ], axis=1)
    return np.concatenate([code, VENTRAL_CONTINUOUS_WEIGHT * continuous], axis=1)


def ventral_features(latents: pd.DataFrame, seed: int) -> np.ndarray:
    """Ground-truth ventral features (n, 64) float64: max(0, inputs @ projection)."""
    return np.maximum(ventral_inputs(latents, seed) @ ventral_model(seed)["projection"], 0.0)


# ---------------------------------------------------------------- voxels


def early_mixing(rng: np.random.Generator, n_voxels: int) -> np.ndarray:
    """(128, n_voxels) weights: a Gaussian pRF on the 4 x 4 grid times non-negative channel weights."""
    n_channels = len(GABOR_ORIENTATIONS_DEG) * len(GABOR_WAVELENGTHS)
    centres = rng.uniform(0.0, POOL_GRID, size=(n_voxels, 2))
    sizes = rng.uniform(0.5, 1.2, size=n_voxels)
    channels = rng.gamma(0.7, size=(n_voxels, n_channels))
    cell = np.arange(POOL_GRID) + 0.5
    d2 = (cell[None, :, None] - centres[:, 0, None, None]) ** 2 + (cell[None, None, :] - centres[:, 1, None, None]) ** 2
    spatial = np.exp(-d2 / (2 * sizes[:, None, None] ** 2)).reshape(n_voxels, -1)
    return (channels[:, :, None] * spatial[:, None, :]).reshape(n_voxels, -1).T


def ventral_mixing(rng: np.random.Generator, n_voxels: int) -> np.ndarray:
    """(64, n_voxels) weights: Gaussian, each feature kept with probability 0.3 per voxel."""
    weights = rng.standard_normal((N_VENTRAL_FEATURES, n_voxels))
    return weights * (rng.random((N_VENTRAL_FEATURES, n_voxels)) < 0.3)


def voxel_signal(features: np.ndarray, mixing: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Noise-free responses (n, n_voxels): features @ mixing, z-scored per voxel over the rows, times gains."""
    signal = features @ mixing
    signal = signal - signal.mean(axis=0)
    std = signal.std(axis=0)
    std[std == 0] = 1.0
    return signal / std * gains


def simulate_region(
    features: np.ndarray, subject: int, region: str, seed: int, n_voxels: int, noise_sd: float, n_repetitions: int,
) -> dict[str, np.ndarray]:
    """One subject's voxels in one region for the stimuli whose features are the rows of ``features``.

    Returns ``repetitions`` (n, n_repetitions, n_voxels) float32, ``average`` (n, n_voxels) float32,
    ``noise_ceiling`` (n_voxels,): gain^2 / (gain^2 + noise_sd^2 / n_repetitions), the fraction of the
    variance of the repetition average that is signal.
    """
    code = REGIONS.index(region)
    mixing_rng = stream(seed, STREAM_SUBJECT, subject, code, PURPOSE_MIXING)
    mixing = early_mixing(mixing_rng, n_voxels) if region == "early" else ventral_mixing(mixing_rng, n_voxels)
    gains = stream(seed, STREAM_SUBJECT, subject, code, PURPOSE_GAIN).uniform(*VOXEL_GAIN_RANGE, size=n_voxels)
    signal = voxel_signal(features, mixing, gains)
    noise = stream(seed, STREAM_SUBJECT, subject, code, PURPOSE_NOISE).standard_normal(
        (len(features), n_repetitions, n_voxels))
    repetitions = (signal[:, None, :] + noise_sd * noise).astype(np.float32)
    return {
        "repetitions": repetitions,
        "average": repetitions.mean(axis=1, dtype=np.float64).astype(np.float32),
        "noise_ceiling": gains**2 / (gains**2 + noise_sd**2 / n_repetitions),
    }


def spearman_brown_reliability(repetitions: np.ndarray) -> np.ndarray:
    """Reliability (n_units,) of the repetition average, from (n_stimuli, k, n_units) repetitions.

    Mean Pearson r over stimuli between every pair of repetitions (single-trial reliability r1), then
    Spearman-Brown: k r1 / (1 + (k - 1) r1). A perfect model's expected Pearson r with the average is
    its square root. No NaN padding allowed.
    """
    reps = np.asarray(repetitions, dtype=np.float64)
    k = reps.shape[1]
    z = reps - reps.mean(axis=0)
    z /= np.sqrt((z**2).sum(axis=0))
    pairs = [(z[:, i] * z[:, j]).sum(axis=0) for i in range(k) for j in range(i + 1, k)]
    r1 = np.mean(pairs, axis=0)
    return k * r1 / (1 + (k - 1) * r1)


# ---------------------------------------------------------------- behaviour


def concept_codes() -> np.ndarray:
    """(64, 28) non-negative class codes: one-hot shape family, colour family, shape (x 0.6), shape attributes."""
    codes = np.zeros((N_FINE, N_SHAPE_FAMILIES + N_COLOUR_FAMILIES + N_SHAPES + SHAPE_ATTRIBUTES.shape[1]))
    for label in range(N_FINE):
        cls = fine_class(label)
        codes[label, cls.shape_family] = 1.0
        codes[label, N_SHAPE_FAMILIES + cls.colour_family] = 1.0
        codes[label, N_SHAPE_FAMILIES + N_COLOUR_FAMILIES + cls.shape] = 0.6
        codes[label, N_SHAPE_FAMILIES + N_COLOUR_FAMILIES + N_SHAPES:] = SHAPE_ATTRIBUTES[cls.shape]
    return codes


def behaviour_embedding(seed: int, n_dims: int) -> np.ndarray:
    """(64, n_dims) float32 non-negative concept embedding, rows in fine-label order.

    Each dimension loads on a random subset (p = 0.25, at least one) of the class-code entries with
    weights U(0.5, 1.5); concept-specific noise |N(0, 0.05)| is added; dimensions are sorted by their
    mean, largest first (as in the THINGS SPoSE embedding).
    """
    rng = stream(seed, STREAM_BEHAVIOUR_EMBEDDING)
    codes = concept_codes()
    loadings = (rng.random((n_dims, codes.shape[1])) < 0.25) * rng.uniform(0.5, 1.5, size=(n_dims, codes.shape[1]))
    empty = np.flatnonzero(loadings.sum(axis=1) == 0)
    loadings[empty, rng.integers(0, codes.shape[1], size=len(empty))] = 1.0
    embedding = codes @ loadings.T + np.abs(rng.normal(0.0, 0.05, size=(N_FINE, n_dims)))
    order = np.argsort(-embedding.mean(axis=0), kind="stable")
    return embedding[:, order].astype(np.float32)

