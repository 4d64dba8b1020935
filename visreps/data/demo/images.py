"""Images of the built-in demo dataset: a hierarchical taxonomy of 64 fine classes and a numpy renderer.

Fine class = shape family (4) x shape within the family (4) x colour family (4), numbered
``fine_label = 16 * shape_family + 4 * shape_in_family + colour_family``, so coarser labels nest by
integer division: ``fine_label // 4`` is the shape (16 classes), ``fine_label // 16`` the shape family.
Every image is a pure function of one row of latents (``LATENT_COLUMNS``); all randomness is in
``sample_latents``. Coordinates: the image spans [-1, 1] on both axes (x to the right, y downwards);
``scale`` is the object radius in those units. See docs/demo_data.md for the full model.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

SHAPE_FAMILIES = ("round", "polygon", "star", "bar")
SHAPES = (
    ("circle", "ellipse", "ring", "halfdisc"),
    ("triangle", "square", "pentagon", "hexagon"),
    ("star3", "star4", "star5", "star6"),
    ("bar", "plus", "tee", "ell"),
)
COLOUR_FAMILIES = ("red", "yellow", "green", "blue")
#: HSV hue (degrees) at the centre of each colour family; a sample deviates by up to HUE_JITTER
COLOUR_HUES = (0.0, 55.0, 130.0, 225.0)
HUE_JITTER = 20.0
N_SHAPE_FAMILIES, N_SHAPES_PER_FAMILY, N_COLOUR_FAMILIES = 4, 4, 4
N_SHAPES = N_SHAPE_FAMILIES * N_SHAPES_PER_FAMILY
N_FINE = N_SHAPES * N_COLOUR_FAMILIES
MAX_CLUTTER = 3

#: uniform ranges of the continuous latents (units: image half-widths, radians, HSV fractions)
LATENT_RANGES = {
    "saturation": (0.55, 0.95),
    "value": (0.6, 1.0),
    "x": (-0.3, 0.3),
    "y": (-0.3, 0.3),
    "scale": (0.32, 0.55),
    "rotation": (0.0, 2 * np.pi),
    "texture_contrast": (0.0, 0.4),
    "texture_frequency": (0.5, 2.0),
    "texture_orientation": (0.0, np.pi),
    "texture_phase": (0.0, 2 * np.pi),
    "background": (0.25, 0.75),
    "background_tint": (-0.06, 0.06),
    "background_slope": (-0.15, 0.15),
    "clutter_position": (-0.9, 0.9),
    "clutter_angle": (0.0, np.pi),
    "clutter_length": (0.1, 0.35),
    "clutter_width": (0.02, 0.06),
    "clutter_grey": (0.0, 1.0),
}

_CLUTTER_FIELDS = ("x", "y", "angle", "length", "width", "grey")
LATENT_COLUMNS = (
    "fine_label", "shape_family", "shape", "colour_family", "hue", "saturation", "value",
    "x", "y", "scale", "rotation",
    "texture_contrast", "texture_frequency", "texture_orientation", "texture_phase",
    "background", "background_tint_r", "background_tint_g", "background_tint_b",
    "background_slope_x", "background_slope_y", "n_clutter",
    *(f"clutter{k}_{field}" for k in range(MAX_CLUTTER) for field in _CLUTTER_FIELDS),
)


@dataclass(frozen=True)
class FineClass:
    """One of the 64 fine classes; ``folder`` sorts in label order (``00_red_circle``)."""

    label: int
    shape_family: int
    shape: int
    colour_family: int

    @property
    def shape_name(self) -> str:
        return SHAPES[self.shape_family][self.shape % N_SHAPES_PER_FAMILY]

    @property
    def concept(self) -> str:
        return f"{COLOUR_FAMILIES[self.colour_family]}_{self.shape_name}"

    @property
    def folder(self) -> str:
        return f"{self.label:02d}_{self.concept}"


def fine_class(label: int) -> FineClass:
    """The fine class numbered ``label`` (0..63)."""
    if not 0 <= label < N_FINE:
        raise ValueError(f"fine label must be in 0..{N_FINE - 1}, got {label}")
    return FineClass(label, label // 16, label // 4, label % 4)


def fine_classes() -> list[FineClass]:
    """All 64 fine classes in label order."""
    return [fine_class(label) for label in range(N_FINE)]


def balanced_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` fine labels in random order, each class ``n // 64`` or ``n // 64 + 1`` times."""
    extra = rng.choice(N_FINE, size=n % N_FINE, replace=False)
    labels = np.concatenate([np.tile(np.arange(N_FINE), n // N_FINE), extra])
    return rng.permutation(labels).astype(np.int64)


def sample_latents(rng: np.random.Generator, fine_labels: np.ndarray) -> pd.DataFrame:
    """Draw the within-class variation of one image per entry of ``fine_labels``.

    Returns a table with ``LATENT_COLUMNS`` (one row per image). The draws happen in a fixed order,
    one vector per column, so the table depends only on the generator state and ``len(fine_labels)``.
    """
    labels = np.asarray(fine_labels, dtype=np.int64)
    n = len(labels)

    def uniform(key: str, size: int | tuple[int, ...] = n) -> np.ndarray:
        low, high = LATENT_RANGES[key]
        return rng.uniform(low, high, size=size)

    colour = labels % 4
    table: dict[str, np.ndarray] = {
        "fine_label": labels,
        "shape_family": labels // 16,
        "shape": labels // 4,
        "colour_family": colour,
        "hue": (np.asarray(COLOUR_HUES)[colour] + rng.uniform(-HUE_JITTER, HUE_JITTER, size=n)) % 360.0,
    }
    for key in ("saturation", "value", "x", "y", "scale", "rotation", "texture_contrast",
                "texture_frequency", "texture_orientation", "texture_phase", "background"):
        table[key] = uniform(key)
    tint = uniform("background_tint", (n, 3))
    for channel, name in enumerate("rgb"):
        table[f"background_tint_{name}"] = tint[:, channel]
    slope = uniform("background_slope", (n, 2))
    table["background_slope_x"], table["background_slope_y"] = slope[:, 0], slope[:, 1]
    table["n_clutter"] = rng.integers(0, MAX_CLUTTER + 1, size=n)
    for k in range(MAX_CLUTTER):
        table[f"clutter{k}_x"] = uniform("clutter_position")
        table[f"clutter{k}_y"] = uniform("clutter_position")
        for field in ("angle", "length", "width", "grey"):
            table[f"clutter{k}_{field}"] = uniform(f"clutter_{field}")
    return pd.DataFrame({column: table[column] for column in LATENT_COLUMNS})


# ---------------------------------------------------------------- shapes (signed distances, local units)


def _box(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
    qu, qv = np.abs(u) - half_u, np.abs(v) - half_v
    return np.hypot(np.maximum(qu, 0), np.maximum(qv, 0)) + np.minimum(np.maximum(qu, qv), 0)


def _polygon(n_sides: int):
    def sdf(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        sector = 2 * np.pi / n_sides
        theta = np.mod(np.arctan2(v, u) + np.pi / 2, sector) - sector / 2
        return np.hypot(u, v) * np.cos(theta) - np.cos(np.pi / n_sides)
    return sdf


def _star(n_points: int, inner: float = 0.45):
    def sdf(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        theta = np.arctan2(v, u)
        radius = inner + (1 - inner) * ((1 + np.cos(n_points * theta)) / 2) ** 1.5
        return 0.5 * (np.hypot(u, v) - radius)  # 0.5: rough gradient normalisation for the edge ramp
    return sdf


def _ellipse(u: np.ndarray, v: np.ndarray, a: float = 1.0, b: float = 0.55) -> np.ndarray:
    k0 = np.hypot(u / a, v / b)
    k1 = np.hypot(u / a**2, v / b**2)
    return k0 * (k0 - 1) / np.maximum(k1, 1e-6)


def _halfdisc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    shifted = v - 0.4
    return np.maximum(np.hypot(u, shifted) - 1, shifted)


#: shape index (0..15) -> signed distance in object units (negative inside, object radius ~1)
SHAPE_SDFS = (
    lambda u, v: np.hypot(u, v) - 1,
    _ellipse,
    lambda u, v: np.abs(np.hypot(u, v) - 0.72) - 0.28,
    _halfdisc,
    _polygon(3), _polygon(4), _polygon(5), _polygon(6),
    _star(3), _star(4), _star(5), _star(6),
    lambda u, v: _box(u, v, 1.0, 0.26),
    lambda u, v: np.minimum(_box(u, v, 0.95, 0.22), _box(u, v, 0.22, 0.95)),
    lambda u, v: np.minimum(_box(u, v + 0.7, 0.9, 0.2), _box(u, v - 0.2, 0.2, 0.9)),
    lambda u, v: np.minimum(_box(u + 0.6, v, 0.22, 0.95), _box(u, v - 0.73, 0.82, 0.22)),
)


# ---------------------------------------------------------------- rendering


def hsv_to_rgb(hue_deg: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """(n,) HSV (hue in degrees, s and v in 0..1) -> (n, 3) RGB in 0..1."""
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = np.mod(offset + hue_deg / 60.0, 6.0)
        channels.append(value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.stack(channels, axis=1)


def chunk_size(image_size: int) -> int:
    """Images rendered at once: about 2 million pixels per chunk (bounded memory at 224 x 224)."""
    return max(8, 2_000_000 // (image_size * image_size))


def _column(latents: pd.DataFrame, name: str) -> np.ndarray:
    return latents[name].to_numpy(dtype=np.float32)[:, None, None]


def render_images(latents: pd.DataFrame, image_size: int) -> np.ndarray:
    """Render one uint8 RGB image (image_size, image_size, 3) per latent row -> (n, size, size, 3).

    Layers, back to front: background (grey level + linear gradient + colour tint), up to three
    achromatic line segments (clutter), the object (shape mask with an anti-aliased edge, HSV colour
    multiplied by a sinusoidal texture that moves with the object).
    """
    n, size = len(latents), int(image_size)
    if n == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    grid = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0)
    xx, yy = grid[None, None, :], grid[None, :, None]
    pixel = 2.0 / size

    def edge_alpha(distance: np.ndarray) -> np.ndarray:  # distance in image units
        return np.clip(0.5 - distance / pixel, 0.0, 1.0)

    # background and clutter are achromatic: composite them in one channel and keep, per pixel, the
    # weight of the (tinted) background still visible
    grey = _column(latents, "background") + _column(latents, "background_slope_x") * xx \
        + _column(latents, "background_slope_y") * yy
    visible = np.ones_like(grey)
    n_clutter = latents["n_clutter"].to_numpy()
    for k in range(MAX_CLUTTER):
        rows = np.flatnonzero(n_clutter > k)
        if len(rows) == 0:
            continue
        part = latents.iloc[rows]
        dx, dy = xx - _column(part, f"clutter{k}_x"), yy - _column(part, f"clutter{k}_y")
        angle = _column(part, f"clutter{k}_angle")
        along = dx * np.cos(angle) + dy * np.sin(angle)
        across = dy * np.cos(angle) - dx * np.sin(angle)
        distance = np.hypot(np.maximum(np.abs(along) - _column(part, f"clutter{k}_length"), 0), across)
        alpha = edge_alpha(distance - _column(part, f"clutter{k}_width"))
        grey[rows] += alpha * (_column(part, f"clutter{k}_grey") - grey[rows])
        visible[rows] *= 1 - alpha

    scale, rotation = _column(latents, "scale"), _column(latents, "rotation")
    dx, dy = (xx - _column(latents, "x")) / scale, (yy - _column(latents, "y")) / scale
    u = dx * np.cos(rotation) + dy * np.sin(rotation)
    v = -dx * np.sin(rotation) + dy * np.cos(rotation)
    distance = np.empty((n, size, size), dtype=np.float32)
    shapes = latents["shape"].to_numpy()
    for shape in np.unique(shapes):
        rows = shapes == shape
        distance[rows] = SHAPE_SDFS[int(shape)](u[rows], v[rows])
    alpha = edge_alpha(distance * scale)

    orientation = _column(latents, "texture_orientation")
    stripes = np.sin(2 * np.pi * _column(latents, "texture_frequency")
                     * (u * np.cos(orientation) + v * np.sin(orientation)) + _column(latents, "texture_phase"))
    texture = 1.0 + _column(latents, "texture_contrast") * stripes
    colour = hsv_to_rgb(latents["hue"].to_numpy(), latents["saturation"].to_numpy(),
                        latents["value"].to_numpy()).astype(np.float32)
    tint = latents[["background_tint_r", "background_tint_g", "background_tint_b"]].to_numpy(np.float32)
    # channel c = (1 - alpha) (grey + visible tint_c) + alpha texture colour_c, scaled to 0..255 and
    # rounded half up
    base = (1 - alpha) * 255.0
    on_tint, on_colour = base * visible, alpha * texture * 255.0
    base = base * grey + 0.5
    image = np.empty((n, size, size, 3), dtype=np.uint8)
    for channel in range(3):
        value = base + on_tint * tint[:, channel, None, None] + on_colour * colour[:, channel, None, None]
        image[..., channel] = np.clip(value, 0.0, 255.5, out=value)
    return image


def png_bytes(images: np.ndarray, level: int = 6) -> list[bytes]:
    """Encode uint8 RGB images (n, H, W, 3) as PNG files (8-bit truecolour, "Up" row filter, zlib ``level``).

    A plain implementation of the PNG format: zlib releases the GIL, so chunks encode in parallel threads.
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    n, height, width, _ = images.shape
    rows = images.reshape(n, height, width * 3)
    filtered = np.empty((n, height, width * 3 + 1), dtype=np.uint8)
    filtered[:, :, 0] = 2  # filter type Up: each byte minus the byte above it (mod 256)
    filtered[:, 0, 1:] = rows[:, 0]
    filtered[:, 1:, 1:] = rows[:, 1:] - rows[:, :-1]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    end = chunk(b"IEND", b"")
    return [header + chunk(b"IDAT", zlib.compress(frame.tobytes(), level)) + end for frame in filtered]
