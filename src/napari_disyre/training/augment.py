"""Training augmentations for 2D slices (float32 in [0, 1], background exactly 0).

The official training varies geometry (elastic, rotation, scale, mirroring) and intensity (brightness,
gamma, inverted gamma, noise, blur) so that the restoration network does not learn one scanner's look
as "healthy". Each piece is a small function so that it can be tested on its own; :func:`augment_slice`
chains them. The background stays exactly 0 throughout, because inference ignores pixels whose input
is 0 and training must show the network the same convention.

Several contrasts: a slice is (C, H, W). The geometry (elastic, rotation, scale, crop, mirroring) is
drawn once and applied to every channel, since the contrasts are co-registered and must stay so; the
intensity augmentations are drawn for each channel on its own, as scanners vary each contrast alike.
A (H, W) slice draws exactly what it drew before contrasts existed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage

Size = tuple[int, int]

DEFAULT_CROP: Size = (96, 96)
MAX_ROTATION_DEG = 15.0
SCALE_RANGE = (0.75, 1.25)
#: Elastic deformation: smoothed uniform noise in [-1, 1] with this sigma, times this magnitude
#: (displacements of a few pixels, smooth over about 10 pixels).
ELASTIC_SIGMA_RANGE = (9.0, 13.0)
ELASTIC_MAGNITUDE_RANGE = (0.0, 200.0)
BRIGHTNESS_RANGE = (0.9, 1.1)
GAMMA_RANGE = (0.5, 2.0)
MAX_NOISE_VARIANCE = 0.05
BLUR_SIGMA_RANGE = (0.5, 1.5)


@dataclass(frozen=True)
class AugmentationProbabilities:
    """How often each augmentation is applied; the defaults are the official ones.

    ``mirror`` applies to each axis independently.
    """

    elastic: float = 0.1
    rotation: float = 0.1
    scale: float = 0.1
    mirror: float = 0.5
    brightness: float = 0.15
    gamma: float = 0.15
    inverted_gamma: float = 0.15
    noise: float = 0.15
    blur: float = 0.15

    @classmethod
    def constant(cls, p: float) -> AugmentationProbabilities:
        """Every augmentation with the same probability: 0 turns all off, 1 forces all on."""
        return cls(**{f.name: p for f in fields(cls)})


DEFAULT_PROBABILITIES = AugmentationProbabilities()


def _as_slice(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise ValueError(f"Expected a 2D slice (H, W) or (C, H, W), got an array of shape {image.shape}.")
    return image


# -- spatial --------------------------------------------------------------------------------------
def _elastic_displacement(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth random displacements (2, H*W) in pixels: smoothed uniform noise times a magnitude."""
    sigma = rng.uniform(*ELASTIC_SIGMA_RANGE)
    magnitude = rng.uniform(*ELASTIC_MAGNITUDE_RANGE)
    noise = rng.uniform(-1.0, 1.0, (2, *shape))
    smooth = [ndimage.gaussian_filter(n, sigma, mode="constant") * magnitude for n in noise]
    return np.stack(smooth).reshape(2, -1)


def spatial_augment(
    rng: np.random.Generator,
    image: np.ndarray,
    probabilities: AugmentationProbabilities = DEFAULT_PROBABILITIES,
) -> np.ndarray:
    """Elastic deformation, rotation (+/-15 degrees) and scaling (0.75-1.25), each with its probability.

    The three are composed into one sampling grid about the slice centre and resampled once, linearly,
    with 0 outside: linear interpolation cannot overshoot, so values stay in [0, 1] and the background
    stays 0. When none is drawn the slice is returned unchanged (no resampling blur).
    """
    image = _as_slice(image)
    size = image.shape[-2:]
    elastic = rng.random() < probabilities.elastic
    rotate = rng.random() < probabilities.rotation
    scale = rng.random() < probabilities.scale
    if not (elastic or rotate or scale):
        return image.copy()
    theta = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)) if rotate else 0.0
    zoom = rng.uniform(*SCALE_RANGE) if scale else 1.0
    # Output pixel p samples the input at centre + R(theta) (p - centre) / zoom: zoom > 1 enlarges.
    matrix = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) / zoom
    centre = (np.array(size, dtype=np.float64)[:, None] - 1.0) / 2.0
    grid = np.indices(size, dtype=np.float64).reshape(2, -1)
    coords = matrix @ (grid - centre) + centre
    if elastic:
        coords += _elastic_displacement(rng, size)
    channels = image.reshape(-1, *size)
    out = np.stack(
        [ndimage.map_coordinates(c, coords, order=1, mode="constant", cval=0.0).reshape(size) for c in channels]
    ).reshape(image.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# -- crop and mirror ------------------------------------------------------------------------------
def pad_to(image: np.ndarray, size: Size) -> np.ndarray:
    """Zero-pad each of the last two axes shorter than ``size`` symmetrically (the extra pixel, if any,
    goes last)."""
    pads = [
        ((s - n) // 2, s - n - (s - n) // 2) if n < s else (0, 0)
        for n, s in zip(image.shape[-2:], size, strict=True)
    ]
    return np.pad(image, [(0, 0)] * (image.ndim - 2) + pads)


def random_crop(rng: np.random.Generator, image: np.ndarray, crop: Size = DEFAULT_CROP) -> np.ndarray:
    """A ``crop``-sized window centred on a random foreground pixel, moved back inside the slice.

    Centring on the foreground keeps crops from being all background, which would teach nothing. A slice
    with no foreground gets a uniformly placed window.
    """
    image = pad_to(_as_slice(image), crop)
    points = np.argwhere((image > 0).reshape(-1, *image.shape[-2:]).any(axis=0))
    limits = np.array(image.shape[-2:]) - np.array(crop)
    if len(points):
        start = np.clip(points[rng.integers(len(points))] - np.array(crop) // 2, 0, limits)
    else:
        start = rng.integers(0, limits + 1)
    return image[..., start[0] : start[0] + crop[0], start[1] : start[1] + crop[1]].copy()


def mirror(
    rng: np.random.Generator, image: np.ndarray, p: float = DEFAULT_PROBABILITIES.mirror
) -> np.ndarray:
    """Flip each of the two image axes independently with probability ``p``."""
    for axis in (-2, -1):
        if rng.random() < p:
            image = np.flip(image, axis)
    return np.ascontiguousarray(image)


# -- intensity ------------------------------------------------------------------------------------
def _gamma(rng: np.random.Generator) -> float:
    """A gamma in [0.5, 2], below 1 half of the time, so brightening and darkening are equally likely."""
    low, high = GAMMA_RANGE
    return rng.uniform(low, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, high)


def intensity_augment(
    rng: np.random.Generator,
    image: np.ndarray,
    probabilities: AugmentationProbabilities = DEFAULT_PROBABILITIES,
) -> np.ndarray:
    """Brightness, gamma, inverted gamma, Gaussian noise and blur, each with its probability.

    The gammas act on [0, 1] (the input is clipped first). The result is clipped to [0, 1] and the
    pixels that were background on entry are set back to exactly 0, so that noise and blur never
    invent foreground.
    """
    image = _as_slice(image)
    if image.ndim == 3:  # each contrast on its own
        return np.stack([intensity_augment(rng, channel, probabilities) for channel in image])
    background = image == 0
    x = image.copy()
    if rng.random() < probabilities.brightness:
        x *= np.float32(rng.uniform(*BRIGHTNESS_RANGE))
    if rng.random() < probabilities.gamma:
        x = np.clip(x, 0.0, 1.0) ** np.float32(_gamma(rng))
    if rng.random() < probabilities.inverted_gamma:
        x = 1.0 - (1.0 - np.clip(x, 0.0, 1.0)) ** np.float32(_gamma(rng))
    if rng.random() < probabilities.noise:
        std = np.sqrt(rng.uniform(0.0, MAX_NOISE_VARIANCE))
        x = x + rng.normal(0.0, std, x.shape).astype(np.float32)
    if rng.random() < probabilities.blur:
        x = ndimage.gaussian_filter(x, sigma=rng.uniform(*BLUR_SIGMA_RANGE))
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    x[background] = 0.0
    return x


# -- all together ---------------------------------------------------------------------------------
def augment_slice(
    rng: np.random.Generator,
    image: np.ndarray,
    crop: Size = DEFAULT_CROP,
    probabilities: AugmentationProbabilities = DEFAULT_PROBABILITIES,
) -> np.ndarray:
    """Spatial augmentation, a foreground-centred crop, mirroring, then intensity augmentation.

    Returns a float32 ``crop``-sized slice (with the channels of a (C, H, W) one) in [0, 1] whose
    background (0 after the spatial step) is exactly 0.
    """
    x = spatial_augment(rng, image, probabilities)
    x = random_crop(rng, x, crop)
    x = mirror(rng, x, probabilities.mirror)
    return intensity_augment(rng, x, probabilities)
