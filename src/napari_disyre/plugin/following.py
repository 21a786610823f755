"""The widget follows its viewer, so that nothing it shows outlives what it describes.

When the scan or the current result's mask is removed (one by one, or all at once by clearing the
viewer), or a run fails or is cancelled, the lesion table and the Dice line are emptied with the
reason in one line, and a removed scan's result is no longer driven by the threshold controls.
When the step slider moves, its name says which step it shows, 1 to S
(:func:`~napari_disyre.plugin.results.name_the_step_slider`). And from the moment the widget is
opened, napari opens NIfTI files with this plugin's reader without asking (:func:`prefer_this_reader`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_info

from .results import GROUP_KEY, OUTPUT_KEY, name_the_step_slider

if TYPE_CHECKING:
    from napari.layers import Image, Layer

    from .widget import DetectionWidget

PLUGIN_NAME = "napari-disyre"
NIFTI_PATTERNS = ("*.nii", "*.nii.gz")  # as napari.yaml's reader declares them


def prefer_this_reader() -> list[str]:
    """Make napari open NIfTI files with this reader without asking, where the user has chosen no
    reader for them; returns the patterns claimed. napari's own reader also lists .nii/.nii.gz
    (through imageio), so napari would ask every time: a manifest cannot rank readers, napari's
    ``extension2reader`` setting can (and a choice the user made there, or in the reader dialog
    with "remember", is kept)."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    claimed = [pattern for pattern in NIFTI_PATTERNS if pattern not in plugins.extension2reader]
    if claimed:
        plugins.extension2reader = {**plugins.extension2reader, **dict.fromkeys(claimed, PLUGIN_NAME)}
    return claimed


def follow_viewer(widget: DetectionWidget) -> None:
    """Connect ``widget`` to its viewer's layer removals and step slider."""
    viewer = widget.viewer
    viewer.layers.events.removed.connect(lambda event: _removed(widget, event.value))
    viewer.dims.events.current_step.connect(lambda *_: name_the_step_slider(viewer))
    if prefer_this_reader():
        show_info("NIfTI files now open with napari-disyre (Preferences > Plugins changes that)")


def clear_lesions(widget: DetectionWidget, reason: str) -> None:
    """Empty the lesion table and the Dice line, saying why in one line."""
    widget.lesions = []
    widget.table.clear_with(reason)
    widget.comparison.update(None)


def run_stopped(widget: DetectionWidget, how: str) -> None:
    """A run ``how`` ("failed", "cancelled"): the status line says so and the table empties."""
    widget.status.value = how
    clear_lesions(widget, f"Run {how}: no lesions to list")


def lost_with(layer: Layer, scan: Image | None) -> str | None:
    """Why the lesion table of the result on ``scan`` no longer holds once ``layer`` is removed (the
    scan itself, or the result's mask), in one line; None when ``layer`` is neither."""
    if scan is None:
        return None
    if layer is scan:
        return "Scan layer removed: no lesions to list"
    if layer.metadata.get(GROUP_KEY) == scan.name and layer.metadata.get(OUTPUT_KEY) == "anomaly mask":
        return "Mask layer removed: no lesions to list"
    return None


def _removed(widget: DetectionWidget, layer: Any) -> None:
    reason = lost_with(layer, widget.source)
    if reason is not None:
        clear_lesions(widget, reason)
    if layer is widget.source:
        widget.detection = widget.source = None  # the controls no longer drive a result
