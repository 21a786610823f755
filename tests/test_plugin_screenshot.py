"""A real rendered viewer (needs OpenGL: run under xvfb-run with QT_QPA_PLATFORM=xcb, as ./run.sh test
does): after detection the heat map is visible over the scan."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from .conftest import synthetic_brain

pytestmark = pytest.mark.skipif(
    os.environ.get("QT_QPA_PLATFORM") == "offscreen" or not os.environ.get("DISPLAY"),
    reason="needs a display with OpenGL: run under `xvfb-run -a env QT_QPA_PLATFORM=xcb` (./run.sh test does)",
)


def _hot_pixels(image: np.ndarray) -> int:
    """Pixels coloured by a heat colormap: clearly more red than blue."""
    rgb = image[..., :3].astype(int)
    return int(((rgb[..., 0] > 120) & (rgb[..., 0] > rgb[..., 2] + 60)).sum())


def test_heat_map_is_visible_over_the_scan(make_napari_viewer, qtbot, tmp_path, tiny_checkpoint):
    from napari_disyre.checkpoint import save_checkpoint
    from napari_disyre.plugin.widget import DetectionWidget

    data, _ = synthetic_brain(shape=(64, 64, 12))
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])), path)
    viewer = make_napari_viewer(show=True)
    viewer.open(str(path), plugin="napari-disyre")
    viewer.dims.order = (2, 0, 1)
    widget = DetectionWidget(viewer)
    widget.checkpoint.value = str(save_checkpoint(tmp_path / "ckpt", tiny_checkpoint))
    widget.device.value = "cpu"
    widget.steps.value = 2
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    anomaly_map = viewer.layers["scan anomaly map"]
    viewer.layers["scan anomaly mask"].visible = False
    viewer.dims.set_point(0, 0.0)  # restoration step 0; spatial point unchanged
    with_map = viewer.screenshot(canvas_only=True, flash=False)
    anomaly_map.visible = False
    without_map = viewer.screenshot(canvas_only=True, flash=False)
    assert with_map.shape == without_map.shape and with_map.shape[0] > 100
    assert _hot_pixels(without_map) < 0.001 * without_map[..., 0].size  # a grey scan has no hot pixels
    assert _hot_pixels(with_map) > 0.01 * with_map[..., 0].size  # the map shows over the brain
