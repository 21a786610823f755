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


def show_axial(viewer, layer=None) -> None:
    """Slice ``layer`` (default: the first layer) axially, anterior up, radiological left-right: the
    view the ``demo`` command, File > Open Sample and the reader's first scan open with."""
    from ..detection.display import axial_view
    from .layers import layer_affine

    layer = layer if layer is not None else next(iter(viewer.layers), None)
    if layer is None or layer.ndim != 3 or viewer.dims.ndim != 3:
        return
    view = axial_view(layer_affine(layer))
    viewer.dims.order = view.order
    scene = getattr(viewer, "scene", viewer)  # napari >= 0.9 keeps the camera in the scene
    scene.camera.orientation2d = (view.vertical, view.horizontal)
    viewer.reset_view()


def show_axial_once_added(name: str) -> None:
    """Show the layer called ``name`` axially once napari adds it to the current viewer, if that viewer
    holds nothing else (a sample or reader cannot reach the viewer otherwise; a user's view of layers
    already open is left alone)."""
    import napari

    viewer = napari.current_viewer()
    if viewer is None or len(viewer.layers):
        return

    def added(event) -> None:
        if event.value.name == name:
            viewer.layers.events.inserted.disconnect(added)
            show_axial(viewer, event.value)

    viewer.layers.events.inserted.connect(added)


def run_viewer() -> None:
    """Napari's event loop, until the window closes."""
    import napari

    napari.run()


def settle(seconds: float = 0.0) -> None:
    """Run Qt's event loop for ``seconds`` (at least once), so that the window is laid out and painted
    before a screenshot (sliders drawn, not half-built)."""
    import time

    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    QApplication.processEvents()
    while time.perf_counter() < end:
        time.sleep(0.02)
        QApplication.processEvents()


def screenshot_after_detection(viewer, widget, path: Path) -> int:
    """Detect, show the slice with the largest lesion, save the window once laid out, and close."""
    widget.run()
    while widget.worker is not None:
        settle(0.05)
    if widget.detection is None:
        return 1
    if getattr(widget, "lesions", None):
        widget.jump_to_lesion(0)
    settle(1.0)
    with atomic_output(path, overwrite=True) as tmp:  # the path was given to be (re)written
        viewer.screenshot(str(tmp), canvas_only=False, flash=False)
    viewer.close()
    print(f"screenshot written to {path}")
    return 0
