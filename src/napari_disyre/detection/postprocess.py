"""From an anomaly map to a segmentation: brain masking, smoothing, thresholding, small components
removed, and a per-lesion table with volumes in mL and world-space centroids.

Components are 26-connected (face, edge or corner neighbours), as FSL's cluster and ITK-SNAP count
them, so a lesion drawn diagonally across slices stays one lesion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import measure, morphology

from ..errors import InputError
from ..validation import MapOptions, SegmentationOptions, check

#: Healthy-voxel score quantile used as the default threshold when the checkpoint records one.
DEFAULT_HEALTHY_QUANTILE = "0.999"


@dataclass(frozen=True)
class Lesion:
    """One connected component of the mask."""

    label: int
    voxels: int
    volume_ml: float
    peak_score: float
    mean_score: float
    centroid_world: tuple[float, float, float]  # scanner/world mm (RAS+ as nibabel reports it)
    centroid_voxel: tuple[float, float, float]  # array indices

    def as_row(self) -> dict[str, float | int | str]:
        row = asdict(self)
        for key in ("centroid_world", "centroid_voxel"):
            row[key] = " ".join(f"{v:.1f}" for v in row[key])
        return row


def smooth_map(anomaly_map: np.ndarray, median_size: int = 0) -> np.ndarray:
    """Median-filter the map (``median_size`` voxels per axis; 0 or 1: unchanged) to drop speckle."""
    if median_size <= 1:
        return anomaly_map
    return ndimage.median_filter(anomaly_map, size=median_size)


@dataclass(frozen=True)
class MapPostprocessing:
    """Post-processing of an anomaly map that brain-MRI anomaly benchmarks apply before scoring.

    ``median``: a 3D median filter of the map (window of that many voxels per axis; 0 or 1: off),
    which drops speckle. ``erosion``: the map is set to 0 (its floor) outside the brain mask eroded by
    that many voxels (face-connected steps; the array border counts as outside), which silences the
    brain's edge, where restoration errors gather. The voxels that metrics count stay the whole brain.
    Detection, evaluation and the widget share this one definition; a checkpoint may record its
    default in ``disyre.json`` (``"postprocessing": {"erosion": N, "median": K}``).
    """

    erosion: int = 0
    median: int = 0

    def __post_init__(self) -> None:
        check(MapOptions, {"erosion": self.erosion, "median": self.median}, "map post-processing", error=InputError)

    @property
    def enabled(self) -> bool:
        return self.erosion > 0 or self.median > 1

    def apply(self, anomaly_map: np.ndarray, brain: np.ndarray) -> np.ndarray:
        """The post-processed map (a new array when enabled; ``anomaly_map`` itself otherwise)."""
        if not self.enabled:
            return anomaly_map
        bounded_by_volume(anomaly_map.shape, erosion=self.erosion, median=self.median)
        kept = ndimage.binary_erosion(brain, iterations=self.erosion) if self.erosion else brain.astype(bool)
        return np.where(kept, smooth_map(anomaly_map, self.median), 0).astype(anomaly_map.dtype)

    def to_dict(self) -> dict[str, int]:
        return {"erosion": self.erosion, "median": self.median}

    @classmethod
    def from_dict(cls, d: dict | None) -> MapPostprocessing:
        d = d or {}
        return cls(erosion=int(d.get("erosion", 0)), median=int(d.get("median", 0)))

    @classmethod
    def for_checkpoint(cls, info, erosion: int | None = None, median: int | None = None) -> MapPostprocessing:
        """The checkpoint's recorded default (``info.postprocessing``), each value overridden where given."""
        default = cls.from_dict(getattr(info, "postprocessing", None))
        return cls(
            erosion=default.erosion if erosion is None else erosion,
            median=default.median if median is None else median,
        )

    def describe(self) -> str:
        parts = ([f"brain mask eroded by {self.erosion} voxel(s)"] if self.erosion else []) + (
            [f"{self.median}-voxel median filter"] if self.median > 1 else []
        )
        return ", ".join(parts) or "none"


def bounded_by_volume(shape: tuple[int, ...], *, erosion: int = 0, median: int = 0, min_size: int = 0,
                      sample_voxels: int | None = None) -> None:  # fmt: skip
    """Refuse a size option the volume cannot hold: a median window or an erosion wider than the
    volume, components or samples larger than its voxel count (they would blank every map or cost
    memory for nothing)."""
    voxels, smallest = int(np.prod(shape)), min(shape)
    for name, value, limit in (
        ("median", median, smallest),
        ("erosion", erosion, smallest // 2),
        ("min-size", min_size, voxels),
        ("sample-voxels", sample_voxels or 0, voxels),
    ):
        if value > limit:
            raise InputError(
                f"--{name} {value} is larger than the volume allows ({limit} for a {'x'.join(map(str, shape))} "
                f"volume); choose at most {limit}."
            )


def record_postprocessing(checkpoint_folder: Path, options: MapPostprocessing) -> None:
    """Make ``options`` the default post-processing of a napari-disyre checkpoint folder: rewrites its
    ``disyre.json`` atomically (detect and evaluate then apply it unless told otherwise)."""
    from ..checkpoint_files import read_json_object
    from ..disyre.checkpoint import METADATA_FILE, CheckpointInfo
    from ..outputs import write_json

    path = Path(checkpoint_folder) / METADATA_FILE
    if not path.exists():
        raise InputError(
            f"{checkpoint_folder}: no {METADATA_FILE}; only napari-disyre checkpoints record defaults."
        )
    record = read_json_object(path, "napari-disyre metadata")
    CheckpointInfo.from_dict(record, str(path))  # a malformed file is reported, not rewritten
    record["postprocessing"] = options.to_dict()  # every other key is kept as it was
    write_json(path, record)


def threshold_mask(
    anomaly_map: np.ndarray,
    threshold: float,
    *,
    min_size: int = 0,
    region: np.ndarray | None = None,
) -> np.ndarray:
    """Voxels scoring above ``threshold`` inside ``region``, without components smaller than ``min_size``.
    A NaN threshold (which would select nothing, silently) or a negative size is refused."""
    check(SegmentationOptions, {"threshold": threshold, "min_size": min_size}, "threshold_mask", error=InputError)
    bounded_by_volume(anomaly_map.shape, min_size=min_size)
    mask = anomaly_map > threshold
    if region is not None:
        mask &= region.astype(bool)
    if min_size > 1:
        mask = morphology.remove_small_objects(mask, max_size=min_size - 1, connectivity=mask.ndim)
    return mask


def lesion_table(mask: np.ndarray, anomaly_map: np.ndarray, affine: np.ndarray) -> list[Lesion]:
    """Connected components of ``mask``, largest first, measured on ``anomaly_map``."""
    labels = measure.label(mask, connectivity=mask.ndim)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    lesions = []
    for region in measure.regionprops(labels, intensity_image=anomaly_map):
        centroid = np.asarray(region.centroid, dtype=np.float64)
        world = affine[:3, :3] @ centroid + affine[:3, 3]
        lesions.append(
            Lesion(
                label=int(region.label),
                voxels=int(region.area),
                volume_ml=float(region.area * voxel_ml),
                peak_score=float(region.intensity_max),
                mean_score=float(region.intensity_mean),
                centroid_world=tuple(float(v) for v in world),  # type: ignore[arg-type]
                centroid_voxel=tuple(float(v) for v in centroid),  # type: ignore[arg-type]
            )
        )
    lesions.sort(key=lambda lesion: lesion.voxels, reverse=True)
    return lesions


def suggest_threshold(
    anomaly_map: np.ndarray, foreground: np.ndarray, healthy_quantiles: dict[str, float] | None = None
) -> float:
    """A starting threshold: the checkpoint's healthy 99.9th percentile score when it records one,
    else the 99th percentile of this scan's brain scores (which flags 1 % of the brain: adjust it)."""
    if healthy_quantiles and DEFAULT_HEALTHY_QUANTILE in healthy_quantiles:
        return float(healthy_quantiles[DEFAULT_HEALTHY_QUANTILE])
    inside = anomaly_map[foreground]
    return float(np.quantile(inside, 0.99)) if inside.size else 0.0
