"""A napari window with the DISYRE widget docked: what ``napari-disyre view`` and ``demo`` open.

The command line only parses options; everything that touches napari or Qt is here, in the plugin.
"""

from __future__ import annotations

from pathlib import Path

from ..outputs import atomic_output


def viewer_with_widget(checkpoint: Path | None = None):
    """A napari window with the widget docked on the right (and ``checkpoint`` chosen in it)."""
    import napari

    from .widget import DetectionWidget

    viewer = napari.Viewer(title="napari-disyre")
    widget = DetectionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="DISYRE anomaly detection", area="right")
    if checkpoint is not None:
        widget.checkpoint.value = checkpoint
    return viewer, widget


def show_axial(viewer) -> None:
    """Slice along the last world axis (axial for RAS-like scans), the way radiologists browse."""
    viewer.dims.order = (2, 1, 0)


def run_viewer() -> None:
    """Napari's event loop, until the window closes."""
    import napari

    napari.run()


def screenshot_after_detection(viewer, widget, path: Path) -> int:
    """Detect, show the slice with the largest lesion, save the viewer's canvas and close."""
    import time

    from qtpy.QtWidgets import QApplication

    widget.run()
    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.02)
    if widget.detection is None:
        return 1
    if getattr(widget, "lesions", None):
        widget.jump_to_lesion(0)
    with atomic_output(path, overwrite=True) as tmp:  # the path was given to be (re)written
        viewer.screenshot(str(tmp), canvas_only=False)
    viewer.close()
    print(f"screenshot written to {path}")
    return 0
