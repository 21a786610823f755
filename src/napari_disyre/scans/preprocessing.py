"""Intensity preprocessing: what the network expects to see, the same at training and detection time.

The official method clips negatives and maps the 0th/98th percentiles of the whole volume to 0/1.
That assumes a background of exact zeros. Real scans are not always like that (z-scored BraTS scans
have a constant negative background and negative brain voxels), so the foreground is found first
(from a brain mask, or as "not the border's constant value"), the background is set to 0, and a
foreground with negative values is shifted to start at 0 instead of being clipped away.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from .grid import ModelGrid, model_grid

PercentileRegion = Literal["volume", "foreground"]

#: Above this fraction of negative foreground voxels a scan is taken as z-scored and shifted, not clipped.
NEGATIVE_FOREGROUND_FRACTION = 0.01


@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint wants its input: intensity scaling, grid and slicing.

    ``spacing``/``orientation`` of ``None`` use the scan's own voxel grid as it is (official checkpoints
    do this: their data were already 1 mm, atlas-aligned). ``slice_axis`` is an array axis of the
    (reoriented) volume; official checkpoints slice along the last one.
    """

    percentiles: tuple[float, float] = (0.0, 98.0)
    percentile_region: PercentileRegion = "volume"
    slice_axis: int = 2
    spacing: tuple[float, float, float] | None = None
    orientation: str | None = None

    def __post_init__(self) -> None:
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        if self.percentile_region not in ("volume", "foreground"):
            raise ValueError(
                f"percentile_region must be 'volume' or 'foreground', not {self.percentile_region!r}"
            )
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, not {self.slice_axis}")
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise ValueError(f"spacing must be three positive numbers in mm, got {self.spacing}")
        if self.orientation is not None and (
            len(self.orientation) != 3
            or sorted(self.orientation.upper()) != sorted(_axes_letters(self.orientation))
        ):
            raise ValueError(
                f"orientation must be three axis codes such as 'RAS' or 'LPS', got {self.orientation!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        spacing = d.get("spacing")
        return cls(
            percentiles=tuple(float(p) for p in d.get("percentiles", (0.0, 98.0))),  # type: ignore[arg-type]
            percentile_region=d.get("percentile_region", "volume"),
            slice_axis=int(d.get("slice_axis", 2)),
            spacing=tuple(float(s) for s in spacing) if spacing is not None else None,  # type: ignore[arg-type]
            orientation=d.get("orientation"),
        )


#: What the official implementation does (and what an official checkpoint without metadata gets).
OFFICIAL_PREPROCESSING = Preprocessing()


def _axes_letters(codes: str) -> list[str]:
    """The letters of ``codes`` if they name three different axes (one of L/R, A/P, S/I each)."""
    pairs = ("LR", "AP", "IS")
    found = sorted(codes.upper())
    if sorted(next((c for c in codes.upper() if c in p), "?") for p in pairs) == found:
        return found
    return []


def foreground_mask(data: np.ndarray, brain_mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean foreground: the given brain mask (> 0), else every voxel unlike the constant background.

    The background value is the most common value on the volume's faces (0 for most skull-stripped
    scans, a negative constant for z-scored ones). A scan whose faces hold no dominant value has no
    constant background, which means it is not skull-stripped, or is cropped tightly: then a brain
    mask is required.
    """
    if brain_mask is not None:
        mask = np.asarray(brain_mask) > 0
        if mask.shape != data.shape:
            raise InputError(f"the brain mask has shape {mask.shape} but the scan has shape {data.shape}")
        if not mask.any():
            raise InputError("the brain mask is empty (no voxel > 0); check that it belongs to this scan")
        return mask
    faces = np.concatenate(
        [np.ravel(f) for f in (data[0], data[-1], data[:, 0], data[:, -1], data[:, :, 0], data[:, :, -1])]
    )
    values, counts = np.unique(faces, return_counts=True)
    background = values[np.argmax(counts)]
    if counts.max() < 0.5 * faces.size:
        raise InputError(
            "the scan has no constant background at its borders, so the brain cannot be told from the "
            "background. DISYRE needs skull-stripped scans: give a brain mask (--mask / the widget's mask "
            "layer) or skull-strip the scan first (e.g. HD-BET, SynthStrip)."
        )
    mask = data != background
    if not mask.any():
        raise InputError("the scan holds only its background value; there is no brain to analyse")
    return mask


def zero_background(data: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Float32 copy with the background at 0 and no negative values.

    A foreground that is largely negative (more than 1 % of its voxels, as in z-scored scans) is
    shifted so that its minimum is 0; otherwise stray negatives (interpolation ringing) are clipped,
    as the official code does.
    """
    x = np.where(foreground, data, 0).astype(np.float32)
    inside = x[foreground]
    if np.count_nonzero(inside < 0) > NEGATIVE_FOREGROUND_FRACTION * inside.size:
        x[foreground] -= inside.min()
    np.clip(x, 0, None, out=x)
    return x


def scale_intensities(x: np.ndarray, foreground: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Map the configured percentiles (of the whole volume, or of the foreground) to 0 and 1, clipped.

    ``x`` must already have a zero background (see :func:`zero_background`); it is modified in place.
    """
    region = x if spec.percentile_region == "volume" else x[foreground]
    q_lo, q_hi = np.quantile(region.ravel(), np.array(spec.percentiles) / 100.0)
    if not q_hi > q_lo:
        raise InputError(
            f"the scan has no contrast inside the brain (its {spec.percentiles[0]:g}th and "
            f"{spec.percentiles[1]:g}th intensity percentiles are equal, {q_lo:g}); is it a mask rather than an image?"
        )
    x -= q_lo
    x /= q_hi - q_lo
    np.clip(x, 0, 1, out=x)
    return x


@dataclass
class ModelInput:
    """A scan as the network sees it: on the model grid, intensities in [0, 1], background 0.

    ``image`` is (X, Y, Z) for one contrast, (C, X, Y, Z) for C contrasts (:func:`prepare_contrasts`)."""

    image: np.ndarray
    foreground: np.ndarray
    grid: ModelGrid
    scan_foreground: np.ndarray  # the foreground on the scan's own grid


def prepare_scan(
    data: np.ndarray, affine: np.ndarray, spec: Preprocessing, brain_mask: np.ndarray | None = None
) -> ModelInput:
    """Everything between a loaded scan and the network, shared by detection and training.

    The foreground is found on the scan's grid, the background zeroed, the volume moved to the model
    grid (the foreground with it), and only then are the percentiles taken, so that they describe the
    data the network sees.
    """
    prepared = prepare_contrasts([data], affine, spec, brain_mask)
    prepared.image = prepared.image[0]
    return prepared


def prepare_contrasts(
    channels: list[np.ndarray], affine: np.ndarray, spec: Preprocessing, brain_mask: np.ndarray | None = None
) -> ModelInput:
    """:func:`prepare_scan` for co-registered contrasts on one grid: an image (C, X, Y, Z).

    The brain is one region for all of them (the brain mask, else the union of each contrast's own
    foreground), so every channel has the same background; each contrast's intensities are scaled by
    its OWN percentiles, since contrasts share no intensity scale.
    """
    foreground = np.logical_or.reduce([foreground_mask(data, brain_mask) for data in channels])
    grid = model_grid(channels[0].shape, affine, spec.spacing, spec.orientation)
    images = [grid.to_model(zero_background(data, foreground), order=1) for data in channels]
    if grid.resampled:
        model_foreground = grid.to_model(foreground.astype(np.float32), order=1) >= 0.5
        for image in images:
            image[~model_foreground] = 0
    else:
        model_foreground = grid.to_model(foreground, order=0)
    if not model_foreground.any():
        raise InputError(
            "the brain vanishes on the model's voxel grid: the scan is smaller than one model voxel"
        )
    return ModelInput(
        image=np.stack([scale_intensities(image, model_foreground, spec) for image in images]),
        foreground=model_foreground,
        grid=grid,
        scan_foreground=foreground,
    )


def foreground_bbox(foreground: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every foreground voxel (the official evaluation crops to it)."""
    index = np.nonzero(foreground)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)
