"""Layers <-> volumes: how a NIfTI scan is placed in napari's world and recovered from a layer.

A scan's layer carries the NIfTI affine as its napari ``affine`` (exact for oblique scans too) and its
header in ``metadata``, so anything derived from it (maps, masks) is written back on the same grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..detection.display import anatomical_axis_labels
from ..errors import InputError
from ..scans.nifti import Volume

HEADER_KEY = "nifti_header"
PATH_KEY = "nifti_path"


def layer_kwargs(volume: Volume, **extra: Any) -> dict[str, Any]:
    """napari layer keyword arguments that place ``volume`` in world space with its affine."""
    metadata = {HEADER_KEY: volume.header, PATH_KEY: str(volume.path) if volume.path else None}
    return {
        "name": volume.name,
        "affine": volume.affine,
        "metadata": metadata,
        "axis_labels": anatomical_axis_labels(volume.affine),
        **extra,
    }


def derived_kwargs(source: Any, name: str, leading_dims: int = 0, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for a layer derived from ``source`` (same world placement and metadata);
    ``leading_dims`` extra axes (e.g. the restoration step, named ``"step"``) get an identity placement."""
    affine = layer_affine(source)
    labels = tuple(source.axis_labels)
    if leading_dims:
        full = np.eye(4 + leading_dims)
        full[leading_dims:, leading_dims:] = affine
        affine = full
        labels = ("step", *labels)
    return {"name": name, "affine": affine, "metadata": dict(source.metadata), "axis_labels": labels, **extra}


def layer_affine(layer: Any) -> np.ndarray:
    """The layer's full voxel-to-world matrix (scale, translate and affine composed), read through
    napari's public ``data_to_world`` so that layers made by other plugins work too."""
    ndim = layer.ndim
    origin = np.asarray(layer.data_to_world(np.zeros(ndim)), dtype=np.float64)
    matrix = np.eye(ndim + 1)
    for axis in range(ndim):
        unit = np.zeros(ndim)
        unit[axis] = 1.0
        matrix[:ndim, axis] = np.asarray(layer.data_to_world(unit), dtype=np.float64) - origin
    matrix[:ndim, ndim] = origin
    return matrix


def volume_from_layer(layer: Any) -> Volume:
    """The scan behind an image layer, refusing what the engine cannot use (labels, 2D, RGB, 4D)."""
    from napari.layers import Image

    if not isinstance(layer, Image):
        raise InputError(
            f"'{layer.name}' is a {type(layer).__name__.lower()} layer; choose an image layer (the scan).",
            title="Choose an image layer",
        )
    if layer.rgb or layer.ndim != 3:
        raise InputError(
            f"'{layer.name}' has {layer.ndim} dimensions{' (RGB)' if layer.rgb else ''}; DISYRE needs a 3D scan "
            "(open a 3D NIfTI volume).",
            title="Scan must be 3D",
        )
    data = np.asarray(layer.data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise InputError(
            f"'{layer.name}' contains NaN or infinite voxels; fix the scan first.", title="Scan has NaN voxels"
        )
    path = layer.metadata.get(PATH_KEY)
    return Volume(
        data=data,
        affine=layer_affine(layer),
        header=layer.metadata.get(HEADER_KEY),
        path=Path(path) if path else Path(f"{layer.name}.nii.gz"),
    )


def grid_of(data: np.ndarray, metadata: dict[str, Any], affine: np.ndarray) -> Volume:
    """A data-less volume carrying the grid (affine, header) to write ``data`` on."""
    return Volume(
        data=np.broadcast_to(np.float32(0), data.shape), affine=affine, header=metadata.get(HEADER_KEY)
    )
