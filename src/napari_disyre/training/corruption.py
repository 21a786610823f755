"""Synthetic anomalies for training: the DAG corruption of a healthy 2D slice.

DISYRE learns to restore healthy slices from synthetically corrupted ones. The DAG corruption pastes
a foreign patch (a crop of another healthy slice, min-max normalised to the local intensity range so
that it is not trivially detectable by its brightness) into a random soft shape placed in the brain,
then shifts the intensities of some tissue classes inside the same shape (the "bias" corruption). The
corruption level ``max(a_texture, a_bias)`` becomes the training timestep through
:meth:`napari_disyre.disyre.schedule.Schedule.level_to_timestep`.

Everything works on float32 slices in [0, 1] whose background is exactly 0; no anomaly is ever put in
the background, because inference masks scores where the input is 0. Every random draw comes from the
``np.random.Generator`` passed in, so a seed reproduces a corruption exactly.

Several contrasts, a slice (C, H, W): ONE anomaly per sample, as a real lesion is one place in every
contrast. The shape, its place and the levels ``a`` (texture) and ``a_b`` (bias) are drawn once; each
channel then gets its own texture (the same channel of the foreign slice, cropped at the same place)
and its own bias (its own tissue bins and sign, since a lesion is bright in one contrast and dark in
another); the level is the largest of any channel. A (H, W) slice draws exactly what it drew before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Patch = tuple[int, int]

#: Size of the region an anomaly lives in (the official default).
DEFAULT_PATCH: Patch = (64, 64)
#: Shapes are at least this many pixels across ...
MIN_SHAPE_SIZE = 10
#: ... and at most the patch size minus this.
SHAPE_SIZE_MARGIN = 20
#: Disc and blob centres stay this far from the patch border, so most of the shape stays in the patch.
CENTRE_MARGIN = 10
P_ROTATE_RECTANGLE = 0.5
MAX_RECTANGLE_ANGLE = 15.0
#: Probability and largest sigma of the blur that gives shapes soft edges.
P_BLUR_SHAPE = 0.7
MAX_SHAPE_SIGMA = 5.0
#: Keeps the min-max normalisation finite for a constant foreign patch.
NORMALISATION_EPS = 1e-3
#: Intensity codebook of the bias corruption: tissue classes of the normalised scans.
BIAS_CODEBOOK = np.array([0.00565079, 0.38283867, 0.61224216, 0.76920754, 0.9385473], dtype=np.float32)
#: Added to the pixel count under the shape, so that small shapes rarely select a bin by chance.
BIAS_PSEUDOCOUNT = 1000
BIAS_SIGMA = 1.0


@dataclass(frozen=True)
class Corruption:
    """A corrupted slice, the soft shape it was corrupted in, and the corruption level in [0, 1]."""

    image: np.ndarray
    mask: np.ndarray
    level: float


# -- shapes ---------------------------------------------------------------------------------------
def _check_patch(patch: Patch) -> None:
    if len(patch) != 2 or min(patch) < MIN_SHAPE_SIZE + SHAPE_SIZE_MARGIN:
        raise ValueError(
            f"The anomaly patch must be two sizes of at least {MIN_SHAPE_SIZE + SHAPE_SIZE_MARGIN} pixels, got {patch}."
        )


def _rotated_offsets(
    patch: Patch, centre: tuple[float, float], angle_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre offsets from ``centre`` in a frame rotated by ``angle_deg`` (rows, columns)."""
    rows, cols = np.indices(patch, dtype=np.float64) + 0.5
    dy, dx = rows - centre[0], cols - centre[1]
    theta = np.deg2rad(angle_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    return cos * dy - sin * dx, sin * dy + cos * dx


def _ellipse(
    patch: Patch, centre: tuple[float, float], semi_axes: tuple[float, float], angle_deg: float
) -> np.ndarray:
    u, v = _rotated_offsets(patch, centre, angle_deg)
    return (u / semi_axes[0]) ** 2 + (v / semi_axes[1]) ** 2 <= 1.0


def _random_size(rng: np.random.Generator, n: int) -> int:
    return int(rng.integers(MIN_SHAPE_SIZE, n - SHAPE_SIZE_MARGIN + 1))


def rectangle_mask(rng: np.random.Generator, patch: Patch = DEFAULT_PATCH) -> np.ndarray:
    """A binary rectangle with sides in [10, patch - 20], placed where it fits, tilted half of the time.

    The tilt (up to 15 degrees) turns about the rectangle's own centre and keeps the pixels whose centre
    lies inside, which is what rotating the binary image and re-binarising at 0.5 gives, without the
    interpolation.
    """
    _check_patch(patch)
    sides = (_random_size(rng, patch[0]), _random_size(rng, patch[1]))
    centre = tuple(int(rng.integers(0, n - s + 1)) + s / 2 for n, s in zip(patch, sides, strict=True))
    tilted = rng.random() < P_ROTATE_RECTANGLE
    angle = rng.uniform(-MAX_RECTANGLE_ANGLE, MAX_RECTANGLE_ANGLE) if tilted else 0.0
    u, v = _rotated_offsets(patch, centre, angle)
    return ((np.abs(u) < sides[0] / 2) & (np.abs(v) < sides[1] / 2)).astype(np.float32)


def _random_centre(rng: np.random.Generator, patch: Patch) -> tuple[float, float]:
    return tuple(rng.uniform(CENTRE_MARGIN, n - CENTRE_MARGIN) for n in patch)


def disc_mask(rng: np.random.Generator, patch: Patch = DEFAULT_PATCH) -> np.ndarray:
    """A binary disc with a diameter in [10, min(patch) - 20], centred at least 10 pixels from the border."""
    _check_patch(patch)
    radius = _random_size(rng, min(patch)) / 2
    return _ellipse(patch, _random_centre(rng, patch), (radius, radius), 0.0).astype(np.float32)


def blob_mask(rng: np.random.Generator, patch: Patch = DEFAULT_PATCH) -> np.ndarray:
    """An irregular binary blob: the union of 2 to 4 random overlapping ellipses.

    Real lesions are rarely rectangles or discs; overlapping ellipses give lobed outlines of about the
    same area as the other shapes. Each ellipse centre stays 10 pixels inside the patch and every semi-axis
    is at least 5 pixels, so the blob is never empty.
    """
    _check_patch(patch)
    anchor = np.array(_random_centre(rng, patch))
    max_semi = max(MIN_SHAPE_SIZE / 2, (min(patch) - SHAPE_SIZE_MARGIN) / 3)
    blob = np.zeros(patch, dtype=bool)
    for _ in range(int(rng.integers(2, 5))):
        jittered = anchor + rng.normal(0.0, max_semi / 2, 2)
        centre = np.clip(jittered, CENTRE_MARGIN, np.array(patch) - CENTRE_MARGIN)
        semi_axes = tuple(rng.uniform(MIN_SHAPE_SIZE / 2, max_semi, 2))
        blob |= _ellipse(patch, tuple(centre), semi_axes, rng.uniform(0.0, 180.0))
    return blob.astype(np.float32)


SHAPES: tuple[Callable[[np.random.Generator, Patch], np.ndarray], ...] = (
    rectangle_mask,
    disc_mask,
    blob_mask,
)


def random_shape(rng: np.random.Generator, patch: Patch = DEFAULT_PATCH) -> np.ndarray:
    """A soft anomaly shape of size ``patch``: a random rectangle, disc or blob, blurred 70 % of the time.

    The blur (sigma uniform in [0, 5]) gives soft edges, so that the network also learns anomalies that
    fade into healthy tissue. Values are in [0, 1] and the maximum is positive.
    """
    shape = SHAPES[int(rng.integers(len(SHAPES)))](rng, patch)
    if rng.random() < P_BLUR_SHAPE:
        shape = ndimage.gaussian_filter(shape, sigma=rng.uniform(0.0, MAX_SHAPE_SIGMA), mode="constant")
    return np.clip(shape, 0.0, 1.0).astype(np.float32)


# -- placement ------------------------------------------------------------------------------------
def _centre_bounds(image_shape: tuple[int, ...], patch: Patch) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest centres (inclusive) whose patch lies inside the image."""
    half = np.array(patch) // 2
    high = np.array(image_shape) - np.array(patch) + half
    if np.any(high < half):
        raise ValueError(f"The slice {tuple(image_shape)} is smaller than the anomaly patch {patch}.")
    return half, high


def random_location(
    rng: np.random.Generator, image: np.ndarray, patch: Patch = DEFAULT_PATCH
) -> tuple[int, int]:
    """The centre of the anomaly patch: a random foreground pixel whose patch fits in the slice.

    Anchoring at a foreground pixel puts the anomaly in the brain; if no foreground pixel is far enough
    from the border, any centre whose patch fits is drawn uniformly instead.
    """
    low, high = _centre_bounds(image.shape, patch)
    window = np.asarray(image)[low[0] : high[0] + 1, low[1] : high[1] + 1] > 0
    candidates = np.argwhere(window)
    if len(candidates):
        centre = candidates[rng.integers(len(candidates))] + low
    else:
        centre = rng.integers(low, high + 1)
    return int(centre[0]), int(centre[1])


def place_shape(shape: np.ndarray, centre: tuple[int, int], image_shape: tuple[int, int]) -> np.ndarray:
    """A zero image of ``image_shape`` with ``shape`` pasted at ``[cy - ph//2 : cy - ph//2 + ph, ...]``."""
    (ph, pw), (cy, cx) = shape.shape, centre
    y0, x0 = cy - ph // 2, cx - pw // 2
    if y0 < 0 or x0 < 0 or y0 + ph > image_shape[0] or x0 + pw > image_shape[1]:
        raise ValueError(
            f"A {shape.shape} patch centred at {centre} does not fit in an image of shape {image_shape}."
        )
    out = np.zeros(image_shape, dtype=np.float32)
    out[y0 : y0 + ph, x0 : x0 + pw] = shape
    return out


# -- foreign patch interpolation ------------------------------------------------------------------
def foreign_patch(rng: np.random.Generator, foreign: np.ndarray, patch: Patch = DEFAULT_PATCH) -> np.ndarray:
    """A random ``patch``-sized crop of the foreground bounding box of another healthy slice.

    Cropping inside the bounding box makes the patch mostly brain tissue. Where the box is smaller than
    the patch, the crop starts at the box (moved back inside the slice if needed) and so covers it all;
    a slice smaller than the patch is zero-padded at its end first.
    """
    foreign = np.asarray(foreign, dtype=np.float32)
    size = foreign.shape[-2:]
    pads = [(0, max(0, p - n)) for p, n in zip(patch, size, strict=True)]
    foreign = np.pad(foreign, [(0, 0)] * (foreign.ndim - 2) + pads)
    size = foreign.shape[-2:]
    points = np.argwhere((foreign > 0).reshape(-1, *size).any(axis=0))  # any channel's foreground
    if len(points):
        low, high = points.min(0), points.max(0) + 1
    else:
        low, high = np.zeros(2, dtype=int), np.array(size)
    start = [
        min(int(rng.integers(lo, max(lo, hi - p) + 1)), n - p)
        for lo, hi, p, n in zip(low, high, patch, size, strict=True)
    ]
    return foreign[..., start[0] : start[0] + patch[0], start[1] : start[1] + patch[1]].copy()


def normalise_foreign(fp_big: np.ndarray, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Map the foreign patch's range under the mask onto the slice's range there, then clip to [0, 1].

    Without this the network could spot the anomaly from its intensity alone instead of its texture.
    Pixels outside the mask are left as they are: the interpolation ignores them.
    """
    inside = mask > 0
    out = np.array(fp_big, dtype=np.float32)
    if inside.any():
        fp, src = out[inside], np.asarray(image, dtype=np.float32)[inside]
        scale = (src.max() - src.min()) / (fp.max() - fp.min() + NORMALISATION_EPS)
        out[inside] = (fp - fp.min()) * scale + src.min()
    return np.clip(out, 0.0, 1.0)


def foreign_patch_interpolation(
    image: np.ndarray, fp_big: np.ndarray, mask: np.ndarray, a: float
) -> tuple[np.ndarray, float]:
    """Blend the normalised foreign patch into the slice: ``image (1 - a m) + fp a m``.

    Returns the blended slice and its texture level: ``a``, or 0 when the slice came out unchanged
    (``a`` = 0 or an empty mask), because an unchanged slice must be trained as healthy.
    """
    fp = normalise_foreign(fp_big, image, mask)
    out = (image * (1.0 - mask * a) + fp * mask * a).astype(np.float32)
    return out, (0.0 if np.array_equal(out, image) else float(a))


# -- bias corruption ------------------------------------------------------------------------------
def quantise(image: np.ndarray) -> np.ndarray:
    """Index of the nearest :data:`BIAS_CODEBOOK` entry of every pixel (ties go to the lower entry)."""
    return np.abs(np.asarray(image, dtype=np.float32)[..., None] - BIAS_CODEBOOK).argmin(axis=-1)


def select_bins(rng: np.random.Generator, bins: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Which codebook bins the bias shifts: bin k with probability ``n_k / (sum(n) + 1000)``.

    ``n_k`` counts the shape's pixels in bin k, so large shapes shift their common tissue classes; when
    the draw selects nothing every bin is selected, so the bias always has something to act on.
    """
    counts = np.bincount(bins[mask > 0], minlength=len(BIAS_CODEBOOK))
    chosen = rng.random(len(BIAS_CODEBOOK)) < counts / (counts.sum() + BIAS_PSEUDOCOUNT)
    return chosen if chosen.any() else np.ones(len(BIAS_CODEBOOK), dtype=bool)


def bias_corrupt(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, a_b: float
) -> tuple[np.ndarray, float]:
    """Shift the selected tissue classes inside the shape by ``+/- a_b``, then clip to [0, 1].

    ``image (1 - b) + (image +/- a_b) b`` is written as ``image +/- a_b b``, with ``b`` the shape times
    the smoothed mask of selected bins. Returns the result and the bias level: the largest absolute change
    actually made, which the clip and the soft shape can make much smaller than ``a_b``.
    """
    image = np.asarray(image, dtype=np.float32)
    bins = quantise(image)
    selected = select_bins(rng, bins, mask)[bins].astype(np.float32)
    bin_mask = ndimage.gaussian_filter(selected, sigma=BIAS_SIGMA)
    sign = rng.choice((-1.0, 1.0))
    out = np.clip(image + np.float32(sign * a_b) * (mask * bin_mask), 0.0, 1.0).astype(np.float32)
    return out, float(np.abs(image - out).max(initial=0.0))


# -- entry point ----------------------------------------------------------------------------------
def dag_corrupt(
    rng: np.random.Generator,
    image: np.ndarray,
    foreign: np.ndarray,
    *,
    patch: Patch = DEFAULT_PATCH,
    alpha: float | None = None,
) -> Corruption:
    """Corrupt a healthy slice with a foreign patch and a bias in one random soft shape.

    ``foreign`` is another healthy slice (the source of the patch). ``alpha``, when given, fixes both the
    interpolation factor ``a`` and the bias amplitude ``a_b`` (otherwise each is uniform in [0, 1]).
    The returned level is ``max(a_texture, a_bias)``; map it to a timestep with
    ``Schedule.level_to_timestep``.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise ValueError(f"Expected a 2D slice (H, W) or (C, H, W), got an array of shape {image.shape}.")
    if np.ndim(foreign) != image.ndim or np.shape(foreign)[:-2] != image.shape[:-2]:
        raise ValueError(
            f"The foreign slice must be a 2D slice with the image's channels ({image.shape[:-2] or 'none'}), "
            f"got shape {np.shape(foreign)} for an image of shape {image.shape}."
        )
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    channels = image.reshape(-1, *image.shape[-2:])
    shape = random_shape(rng, patch)
    centre = random_location(rng, channels.max(axis=0), patch)  # in any contrast's foreground
    placed = place_shape(shape, centre, channels.shape[1:])
    masks = [placed * (c > 0) for c in channels]
    patches = foreign_patch(rng, foreign, patch).reshape(len(channels), *patch)
    a = rng.uniform() if alpha is None else alpha
    textured = [
        foreign_patch_interpolation(c, place_shape(p, centre, c.shape), m, a)
        for c, p, m in zip(channels, patches, masks, strict=True)
    ]
    a_b = rng.uniform() if alpha is None else alpha
    biased = [bias_corrupt(rng, t, m, a_b) for (t, _), m in zip(textured, masks, strict=True)]
    level = max(max(a_texture, a_bias) for (_, a_texture), (_, a_bias) in zip(textured, biased, strict=True))
    return Corruption(
        image=np.stack([b for b, _ in biased]).reshape(image.shape),
        mask=np.stack(masks).reshape(image.shape),
        level=level,
    )
