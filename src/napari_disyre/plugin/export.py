"""Exporting a result layer (mask or map) as NIfTI on the scan's voxel grid, from the widget.

What is written is what the layer holds now (a mask edited by hand is exported as edited), on the
scan's grid and affine, so it lines up in ITK-SNAP, 3D Slicer or FSLeyes. A save dialog opens in the
scan's folder (the user's home for the bundled demo) with a name derived from the scan and confirms
before replacing a file, so the choice made there is honoured; a ``path`` given by a script never
replaces an existing file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import napari
import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QFileDialog, QWidget

from ..detection.display import export_suggestion
from ..errors import DisyreError
from ..scans.nifti import save_volume
from .layers import PATH_KEY, grid_of, layer_affine
from .notices import show_problem
from .results import OUTPUT_KEY, find_result

if TYPE_CHECKING:
    from napari.layers import Image

NIFTI_FILTER = "NIfTI (*.nii.gz *.nii)"


def export_layer(
    viewer: napari.Viewer, source: Image, what: str, path: str | None, parent: QWidget | None = None
) -> Path | None:
    """Write the ``what`` ("mask" or "map") layer of the result on ``source``; None when nothing
    was written (a notification says why, or the user cancelled the dialog)."""
    result = find_result(viewer, source.name)
    layer = result.mask if what == "mask" else result.anomaly_map
    if layer is None or source not in viewer.layers:
        gone = "scan" if source not in viewer.layers else f"anomaly {what}"
        show_problem(
            f"The {gone} layer was deleted, so there is no {what} to export: run Detect anomalies again.",
            title=f"{gone.capitalize()} layer was deleted",
        )
        return None
    overwrite = False
    if path is None:
        scan_path = source.metadata.get(PATH_KEY) or source.source.path  # our reader's, or napari's
        suggestion = export_suggestion(scan_path, source.name, f"anomaly_{what}")
        path, _ = QFileDialog.getSaveFileName(
            parent, f"Export {what}", str(suggestion), NIFTI_FILTER
        )
        if not path:
            return None
        overwrite = True  # the dialog asked
    data = np.asarray(layer.data)
    grid = grid_of(data, source.metadata, layer_affine(source))
    try:
        written = save_volume(path, data, grid, kind=what, overwrite=overwrite)
    except DisyreError as exc:
        show_problem(exc)
        return None
    show_info(f"{what} written to {written}")
    return written


def save_layer_as_nifti(viewer: napari.Viewer, path: str | None = None) -> list[str]:
    """File > IO Utilities > "Save layer as NIfTI...": the selected layer (a 3D image or mask, or a
    4D step layer) through this plugin's writer, on its scan's grid. napari's own File > Save lists
    napari's writers first, and napari 0.9 has no writer preference, so a .nii.gz name under its
    default file type saves nothing; this dialog offers NIfTI alone. Returns the paths written."""
    layer = viewer.layers.selection.active
    if layer is None:
        show_problem("No layer selected: select one in the layer list, then save it.")
        return []
    if path is None:
        role = str(layer.metadata.get(OUTPUT_KEY, "copy")).replace(" ", "_")
        scan_path = layer.metadata.get(PATH_KEY) or layer.source.path
        suggestion = export_suggestion(scan_path, layer.name, role)
        path, _ = QFileDialog.getSaveFileName(None, "Save layer as NIfTI", str(suggestion), NIFTI_FILTER)
        if not path:
            return []
    try:
        written = napari.save_layers(path, [layer], plugin="napari-disyre")
    except DisyreError as exc:
        show_problem(exc)
        return []
    show_info(f"{layer.name} written to {written[0]}")
    return written
