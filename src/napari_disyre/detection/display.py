"""How a detection is shown: the numbers behind the napari layers, kept out of the widget.

The widget only copies these choices onto layers; deciding them needs the map's statistics and the
scan's geometry, which belong to the Qt-free core (and are unit-tested here, without a viewer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..sample_data import is_bundled
from ..scans.nifti import strip_nifti_extension

#: The map's colour ramp starts at the brain's median score (healthy tissue stays transparent) and the
#: threshold sits between these fractions of the range, so that voxels just above it are already
#: clearly coloured and the strongest lesions still saturate.
THRESHOLD_FRACTION = (0.25, 0.6)
FLOOR_QUANTILE = 0.5
TOP_QUANTILE = 0.999


def map_contrast_limits(
    anomaly_map: np.ndarray, foreground: np.ndarray, threshold: float
) -> tuple[float, float]:
    """Contrast limits ``(low, high)`` for showing ``anomaly_map`` over the scan.

    ``low`` is the median brain score (the colormap is transparent below it, so most healthy tissue
    shows the anatomy untouched), ``high`` the brain's 99.9th percentile. Both are then moved so the
    threshold lies between :data:`THRESHOLD_FRACTION` of the range: a real scan whose scores all sit
    below the suggested threshold would otherwise glow everywhere and show nothing above it.
    """
    inside = np.asarray(anomaly_map)[np.asarray(foreground, dtype=bool)]
    if inside.size == 0:
        inside = np.asarray([0.0, max(float(threshold), 1e-6)])
    low = float(np.quantile(inside, FLOOR_QUANTILE))
    high = float(np.quantile(inside, TOP_QUANTILE))
    lowest, highest = THRESHOLD_FRACTION
    if high - low <= 1e-12:
        high = low + max(abs(float(threshold) - low), abs(low), 1e-6)
    if threshold < low + lowest * (high - low):  # threshold too near the floor: lower the floor
        low = (threshold - lowest * high) / (1 - lowest)
    if threshold > low + highest * (high - low):  # threshold too near the top: raise the top
        high = low + (threshold - low) / highest
    return low, high


@dataclass(frozen=True)
class SliceView:
    """An axial first view of a scan in napari: which data axis the slider moves along, and how the
    displayed plane is turned so that anterior is up and the patient's right is on the left
    (radiological convention, as scanners' viewers show it)."""

    order: tuple[int, int, int]  # napari dims order: slider axis first, then rows, columns
    vertical: str  # napari camera orientation of the rows: "up" or "down"
    horizontal: str  # of the columns: "left" or "right"


def axial_view(affine: np.ndarray) -> SliceView:
    """The axial view of a scan with this voxel-to-world (RAS+) ``affine``: slide along the voxel axis
    nearest to superior (the axis DISYRE models slice along once reoriented), rows along the one
    nearest to anterior, columns along left-right."""
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0, keepdims=True)
    world = np.abs(directions)  # world axis (row) x voxel axis (column) alignment
    superior = int(np.argmax(world[2]))
    rest = [axis for axis in range(3) if axis != superior]
    anterior = max(rest, key=lambda axis: world[1, axis])
    right = next(axis for axis in rest if axis != anterior)
    # napari draws rows downwards and columns rightwards in world units, and world is RAS+: anterior
    # up and the patient's right on the left need both axes drawn the other way round
    return SliceView(order=(superior, anterior, right), vertical="up", horizontal="left")


#: napari slider names for the voxel axes, by the world direction (RAS+) they are nearest to
_ANATOMICAL_AXES = ("left-right", "posterior-anterior", "inferior-superior")


def anatomical_axis_labels(affine: np.ndarray) -> tuple[str, str, str]:
    """Names for a scan's voxel axes in napari (its sliders): the anatomical axis each is nearest to."""
    directions = np.abs(np.asarray(affine, dtype=np.float64)[:3, :3])
    nearest = np.argmax(directions, axis=0)
    if len(set(nearest.tolist())) < 3:  # a strongly oblique scan: two axes near one direction
        return ("axis 0", "axis 1", "axis 2")
    return tuple(_ANATOMICAL_AXES[int(world)] for world in nearest)  # type: ignore[return-value]


def output_name(scan_path: str | Path, what: str) -> Path:
    """Where to suggest saving ``what`` (``"anomaly_map"``, ``"anomaly_mask"``...) for a scan: beside
    it, as ``<scan>_<what>.nii.gz``."""
    scan_path = Path(scan_path)
    return scan_path.with_name(f"{strip_nifti_extension(scan_path.name)}_{what}.nii.gz")


def export_suggestion(scan_path: str | Path | None, scan_name: str, what: str) -> Path:
    """The file the export dialog proposes for ``what`` of a scan: beside the scan's file, or in the
    user's home folder when the scan has no file or is the bundled demo (inside the installed
    package, which may be read-only and is replaced on upgrade)."""
    if scan_path is None or is_bundled(scan_path):
        return output_name(Path.home() / (Path(scan_path).name if scan_path else f"{scan_name}.nii.gz"), what)
    return output_name(scan_path, what)
