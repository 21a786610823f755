"""The widget's map post-processing: erode the brain mask, 3D median filter (core
:class:`~napari_disyre.detection.postprocess.MapPostprocessing`, as ``detect --erode/--median``).

Both act on the stored map when a control moves, as the threshold does: no model re-run. A
checkpoint that records a default (``"postprocessing"`` in ``disyre.json``) sets them when chosen;
otherwise they are off, which gives the official maps.
"""

from __future__ import annotations

from collections.abc import Mapping

from magicgui.widgets import SpinBox

from ..detection.postprocess import MapPostprocessing
from ..validation import MAX_MEDIAN


class PostprocessControls:
    """Erosion of the scored brain region and median window, in voxels (0: off)."""

    def __init__(self) -> None:
        self.erosion = SpinBox(label="erode brain edge (voxels)", min=0, max=30, value=0)
        # the validation layer's bound, so the widget offers exactly what the CLI and the API accept
        self.median = SpinBox(label="median filter (voxels)", min=0, max=MAX_MEDIAN, value=0)
        self.widgets = [self.erosion, self.median]

    def take_defaults(self, recorded: Mapping[str, int] | None) -> None:
        """The checkpoint's recorded post-processing, or off."""
        recorded = recorded or {}
        self.erosion.value = int(recorded.get("erosion", 0))
        self.median.value = int(recorded.get("median", 0))

    def value(self) -> MapPostprocessing:
        return MapPostprocessing(erosion=self.erosion.value, median=self.median.value)
