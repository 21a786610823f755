"""npe2 reader, writers and sample data: NIfTI in and out with the scan's affine and header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..sample_data import demo_lesion_path, demo_scan_path
from ..scans.labels import as_labels
from ..scans.nifti import is_nifti_path, load_matching, load_volume, save_stack, save_volume
from .layers import grid_of, layer_kwargs
from .viewer import show_axial_once_added

LayerData = tuple[np.ndarray, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """napari asks which reader opens ``path``: ours takes .nii and .nii.gz files."""
    paths = [path] if isinstance(path, str) else path
    return read_nifti if paths and all(is_nifti_path(p) for p in paths) else None


def read_nifti(path: str | list[str]) -> list[LayerData]:
    """One layer per file, placed in world space by the NIfTI affine, header in metadata: a labels
    layer for a label volume (:func:`~napari_disyre.scans.labels.as_labels`), else an image layer."""
    paths = [path] if isinstance(path, str) else path
    layers = []
    for p in paths:
        volume = load_volume(p)
        labels = as_labels(volume)
        if labels is None:
            layers.append((volume.data, layer_kwargs(volume), "image"))
        else:
            layers.append((labels, layer_kwargs(volume), "labels"))
    if layers:
        show_axial_once_added(layers[0][1]["name"])
    return layers


def _write(path: str, data: Any, meta: dict[str, Any], kind: str) -> list[str]:
    array = np.asarray(data)
    affine = np.asarray(meta.get("affine", np.eye(array.ndim + 1)))
    scale, translate = (
        np.asarray(meta.get("scale", np.ones(array.ndim))),
        np.asarray(meta.get("translate", np.zeros(array.ndim))),
    )
    # napari applies scale and translate before the affine: compose them into one matrix
    inner = np.eye(array.ndim + 1)
    inner[:-1, :-1] = np.diag(scale)
    inner[:-1, -1] = translate
    full = affine @ inner
    # napari's save dialog has already asked before replacing a file
    if array.ndim == 4 and kind == "map":  # steps first (restorations, map after each step)
        like = grid_of(array[0], meta.get("metadata", {}), full[1:, 1:])
        return [str(save_stack(path, array, like, overwrite=True))]
    like = grid_of(array, meta.get("metadata", {}), full)
    return [str(save_volume(path, array, like, kind=kind, overwrite=True))]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """A labels layer (e.g. the anomaly mask) as a uint8 NIfTI on the scan's grid."""
    return _write(path, data, meta, "mask")


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """An image layer (e.g. the anomaly map) as a float32 NIfTI on the scan's grid."""
    return _write(path, data, meta, "map")


def demo_brain() -> list[LayerData]:
    """The bundled demo brain (MNI152 T1 with two synthetic lesions) and its ground truth."""
    scan = load_volume(demo_scan_path())
    truth = load_matching(demo_lesion_path(), scan, what="label").astype(np.uint8)
    show_axial_once_added("DISYRE demo brain")
    return [
        (scan.data, layer_kwargs(scan, name="DISYRE demo brain"), "image"),
        (truth, layer_kwargs(scan, name="demo ground truth", opacity=0.5, visible=False), "labels"),
    ]
