"""The widget with a checkpoint of two contrasts: a picker per contrast, pre-filled by layer name,
the grid check, a map layer per contrast beside the combined map, which the threshold and export use."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_disyre.detection.postprocess import threshold_mask

from .conftest import click_detect, two_channel_checkpoint, two_contrasts

pytest.importorskip("napari")


@pytest.fixture
def two_contrast_widget(qtbot, viewer, tmp_path):  # noqa: F811
    from napari_disyre.disyre.checkpoint import save_checkpoint
    from napari_disyre.plugin.widget import DetectionWidget

    paths, _ = two_contrasts(tmp_path)
    for name in ("P7_T2w", "P7_FLAIR"):  # opened in the "wrong" order, named in capitals
        source = paths["t2" if "T2" in name else "flair"]
        renamed = source.with_name(f"{name}.nii.gz")
        source.rename(renamed)
        viewer.open(str(renamed), plugin="napari-disyre")
    widget = DetectionWidget(viewer)
    widget.checkpoint.value = str(save_checkpoint(tmp_path / "model", two_channel_checkpoint()))
    widget.device.value = "cpu"
    widget.steps.value = 1
    qtbot.addWidget(widget)
    return widget


def test_a_picker_per_contrast_prefilled_by_layer_name(two_contrast_widget):
    pickers = list(two_contrast_widget.contrast_pickers.container)
    assert [p.label for p in pickers] == ["flair", "t2"]
    assert [p.value.name for p in pickers] == ["P7_FLAIR", "P7_T2w"]
    assert two_contrast_widget.scan.native.isHidden()  # the one-scan picker gives way to the two
    assert not two_contrast_widget.contrast_pickers.container.native.isHidden()


def test_detect_adds_a_map_per_contrast_and_thresholds_the_combined_map(qtbot, two_contrast_widget, tmp_path):
    widget, viewer = two_contrast_widget, two_contrast_widget.viewer
    click_detect(qtbot, widget)
    combined = viewer.layers["P7_FLAIR anomaly map"].data
    per_contrast = [viewer.layers[f"P7_FLAIR anomaly map ({c})"].data for c in ("flair", "t2")]
    np.testing.assert_allclose(combined, (per_contrast[0] + per_contrast[1]) / 2, atol=1e-6)
    assert viewer.layers["P7_FLAIR restorations (t2)"].data.shape == (1, 40, 44, 12)
    detection = widget.detection
    widget.threshold_box.value = float(np.quantile(combined[detection.foreground], 0.9))
    mask = viewer.layers["P7_FLAIR anomaly mask"].data
    expected = threshold_mask(combined, widget.threshold_box.value, min_size=widget.min_size.value,
                              region=detection.foreground)  # fmt: skip
    np.testing.assert_array_equal(mask, expected)
    out = widget.export("map", str(tmp_path / "exported_map.nii.gz"))
    np.testing.assert_allclose(nib.load(out).get_fdata(), combined, atol=1e-6)


def test_layers_on_different_grids_are_refused(qtbot, two_contrast_widget, errors):  # noqa: F811
    widget, viewer = two_contrast_widget, two_contrast_widget.viewer
    viewer.layers["P7_T2w"].data = viewer.layers["P7_T2w"].data[:, :, :11].copy()
    widget.run()
    assert widget.worker is None
    assert any("different shapes" in message for message in errors)
