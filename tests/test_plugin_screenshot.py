"""Real rendered viewers (need OpenGL: run under xvfb-run with QT_QPA_PLATFORM=xcb, as ./run.sh test
does): what the user sees on the demo after detection, checked on the pixels."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import ndimage

pytestmark = pytest.mark.skipif(
    os.environ.get("QT_QPA_PLATFORM") == "offscreen" or not os.environ.get("DISPLAY"),
    reason="needs a display with OpenGL: run under `xvfb-run -a env QT_QPA_PLATFORM=xcb` (./run.sh test does)",
)

#: The anatomy outside the lesion keeps at least this fraction of its edge contrast under the map.
KEPT_EDGE_CONTRAST = 0.6
#: Mean colour saturation (max - min channel, 0-255) the lesion must show beyond healthy tissue.
LESION_SATURATION_MARGIN = 60


def _shot(viewer, visible: set[str]) -> np.ndarray:
    for layer in viewer.layers:
        layer.visible = layer.name in visible
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(np.float64)


def _saturation(rgb: np.ndarray) -> np.ndarray:
    return rgb.max(axis=-1) - rgb.min(axis=-1)


def _edge_contrast(rgb: np.ndarray, where: np.ndarray) -> float:
    grey = rgb.mean(axis=-1)
    return float(np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))[where].mean())


def test_open_sample_first_view_is_axial(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-disyre", "demo_brain")
    # the demo is stored RAS: slide along z (superior), rows along y drawn upwards, x drawn leftwards
    assert tuple(viewer.dims.order) == (2, 1, 0)
    camera = getattr(viewer, "scene", viewer).camera
    assert tuple(o.value for o in camera.orientation2d) == ("up", "left")


def test_demo_lesion_stands_out_and_the_anatomy_stays_visible(make_napari_viewer, qtbot):
    from napari_disyre.plugin.widget import DetectionWidget

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    viewer.open_sample("napari-disyre", "demo_brain")
    widget = DetectionWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.steps.value, widget.device.value = 1, "cpu"
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=600_000)
    assert widget.detection is not None
    order = tuple(viewer.dims.order)
    assert order[-3:] == (3, 2, 1)  # still axial with the step axis in front
    truth = viewer.layers["demo ground truth"]
    z = int(np.argmax(truth.data.sum(axis=(0, 1))))  # the slice through most of the lesion
    viewer.dims.set_point(viewer.dims.ndim - 1, float(truth.data_to_world([0, 0, z])[2]))
    truth.opacity = 1.0
    outputs = {"DISYRE demo brain", "DISYRE demo brain anomaly map", "DISYRE demo brain anomaly mask"}
    lesion_screen = _shot(viewer, {"demo ground truth"}).max(axis=-1) > 0
    scan_only = _shot(viewer, {"DISYRE demo brain"})
    with_map = _shot(viewer, outputs)
    brain = scan_only.mean(axis=-1) > 25
    lesion = ndimage.binary_erosion(lesion_screen, iterations=2) & brain
    healthy = brain & ~ndimage.binary_dilation(lesion_screen, iterations=8)
    assert lesion.sum() > 200 and healthy.sum() > 20 * lesion.sum()
    lesion_colour, healthy_colour = (
        _saturation(with_map)[lesion].mean(),
        _saturation(with_map)[healthy].mean(),
    )
    assert lesion_colour > healthy_colour + LESION_SATURATION_MARGIN, (lesion_colour, healthy_colour)
    kept = _edge_contrast(with_map, healthy) / _edge_contrast(scan_only, healthy)
    assert kept > KEPT_EDGE_CONTRAST, kept
