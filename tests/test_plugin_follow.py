"""The napari widget, third pass: notifications that fit, a lesion table that follows the layers,
label files opened as labels and scored live, the export dialog's folder, the step slider's count,
and napari's own Save for the 4D layers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_disyre.errors import SHORT_LINE_CHARS

from .conftest import click_detect, oblique_affine, synthetic_brain

pytest.importorskip("napari")


def _first_lines(shown: list[str]) -> list[str]:
    return [message.splitlines()[0] for message in shown]


def test_every_user_error_the_widget_shows_leads_with_a_short_reason(qtbot, widget, tmp_path, errors):
    """Each mistake a user can make in the widget, and its notification's first line (<= 40 chars)."""
    from napari_disyre.plugin.layers import volume_from_layer
    from napari_disyre.plugin.notices import describe

    viewer = widget.viewer
    scan = viewer.layers["scan"]
    widget.export("mask")
    widget.keep_result()
    widget.compare()
    widget.checkpoint.value = None
    widget.run()
    widget.checkpoint.value = tmp_path / "missing"  # shown in the caption, then refused by the run
    caption = widget.checkpoint_info.value.splitlines()[0]
    click_detect(qtbot, widget)
    (tmp_path / "empty").mkdir()
    widget.checkpoint.value = tmp_path / "empty"
    click_detect(qtbot, widget)
    viewer.add_image(np.ones((20, 20)), name="a 2D photo")
    viewer.add_image(np.full((4, 4, 4), np.nan), name="with NaN")
    for name in ("a 2D photo", "with NaN"):
        widget.scan.value = viewer.layers[name]
        widget.run()
    labels = viewer.add_labels(np.zeros((4, 4, 4), np.uint8), name="truth")
    with pytest.raises(Exception) as refused:
        volume_from_layer(labels)
    labels_line = describe(refused.value).splitlines()[0]
    viewer.layers.remove(scan)
    for name in [layer.name for layer in viewer.layers]:
        viewer.layers.remove(name)
    widget.run()
    assert caption == "Checkpoint not found"
    assert labels_line == "Choose an image layer"
    assert _first_lines(errors) == [
        "Nothing to export yet",
        "Nothing to keep yet",
        "Only one result to compare",
        "No checkpoint chosen",
        "Checkpoint not found",
        "Not a checkpoint",
        "Scan must be 3D",
        "Scan has NaN voxels",
        "No image layer to analyse",
    ]
    assert all(len(line) <= SHORT_LINE_CHARS for line in _first_lines(errors))
    assert errors[-3].splitlines()[1].startswith("'a 2D photo' has 2 dimensions")  # the rest follows


def test_errors_raised_after_a_run_lead_with_a_short_reason(qtbot, widget, tmp_path, errors):
    viewer = widget.viewer
    widget.steps.value = 1
    click_detect(qtbot, widget)
    out = tmp_path / "mask.nii.gz"
    widget.export("mask", str(out))
    widget.export("mask", str(out))  # exists: never replaced without the dialog's question
    widget.export("mask", str(tmp_path / "mask.txt"))
    viewer.layers.remove("scan anomaly mask")
    widget.export("mask", str(tmp_path / "gone.nii.gz"))
    viewer.add_image(np.zeros((40, 44, 12)), name="blank", affine=viewer.layers["scan"].affine)
    widget.scan.value = viewer.layers["blank"]
    click_detect(qtbot, widget)  # every voxel 0: refused by the engine, in the worker
    lines = _first_lines(errors)
    assert len(lines) == 4, errors
    assert lines[0] == "Output file exists"
    assert lines[1] == "Output must be .nii or .nii.gz"
    assert lines[2] == "Anomaly mask layer was deleted"
    assert lines[3] == "Scan is blank" and "Every voxel of this scan has the value 0" in errors[3]
    assert all(len(line) <= SHORT_LINE_CHARS for line in lines) and len(lines) == 4


def test_a_long_caption_wraps_and_never_widens_the_dock(qtbot, widget, tmp_path):
    widget.show()
    qtbot.waitExposed(widget)
    before = widget.sizeHint().width(), widget.minimumSizeHint().width()
    deep = tmp_path.joinpath(*["a_rather_long_folder_name_without_spaces"] * 8)
    deep.mkdir(parents=True)
    widget.checkpoint.value = deep
    widget.adjustSize()
    label = widget.checkpoint_info.native
    assert len(widget.checkpoint_info.value) > 300 and label.wordWrap()
    assert (widget.sizeHint().width(), widget.minimumSizeHint().width()) == before
    assert label.width() <= widget.width()
    assert label.heightForWidth(label.width()) > 4 * label.fontMetrics().height()  # wrapped, not cut


def _lesion_rows(widget) -> int:
    return widget.table.rowCount()


def test_the_lesion_table_is_cleared_when_its_layers_go_or_a_run_stops(qtbot, widget, tmp_path, errors):
    viewer = widget.viewer
    widget.steps.value = 1
    click_detect(qtbot, widget)
    widget.threshold_box.value = float(np.quantile(widget.detection.anomaly_map[widget.detection.foreground], 0.9))
    assert _lesion_rows(widget) > 0
    viewer.layers.remove("scan anomaly mask")
    assert _lesion_rows(widget) == 0 and widget.table.empty_reason == "Mask layer removed: no lesions to list"
    widget.threshold_box.value *= 0.9  # the threshold no longer refills a table for a mask that is gone
    assert _lesion_rows(widget) == 0 and widget.table.lesion_at(0) is None
    click_detect(qtbot, widget)
    assert _lesion_rows(widget) > 0
    widget.checkpoint.value = tmp_path  # not a checkpoint: the run fails
    click_detect(qtbot, widget)
    assert _lesion_rows(widget) == 0 and widget.table.empty_reason == "Run failed: no lesions to list"
    widget.threshold_box.value *= 1.01  # the last good result is still shown and drives the table
    assert _lesion_rows(widget) > 0
    viewer.layers.clear()  # the scan goes with everything else
    assert _lesion_rows(widget) == 0 and widget.table.empty_reason == "Scan layer removed: no lesions to list"
    assert widget.detection is None and widget.source is None


def test_a_cancelled_run_clears_the_table(qtbot, widget, checkpoint_dir):
    widget.steps.value = 1
    click_detect(qtbot, widget)
    widget.steps.value = 40
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert _lesion_rows(widget) == 0 and widget.table.empty_reason == "Run cancelled: no lesions to list"
    assert widget.status.value == "cancelled"


def test_the_lesion_table_sorts_by_peak_and_jumps_to_the_row_clicked(qtbot, widget):
    from napari_disyre.plugin.lesion_table import LESION_COLUMNS

    widget.steps.value = 1
    click_detect(qtbot, widget)
    foreground = widget.detection.foreground
    widget.min_size.value = 0
    widget.threshold_box.value = float(np.quantile(widget.detection.anomaly_map[foreground], 0.97))
    lesions = widget.lesions
    assert len(lesions) >= 3
    by_size = [widget.table.lesion_at(row) for row in range(len(lesions))]
    assert by_size == lesions  # largest first, as the core lists them
    widget.table.sort_by("peak")
    by_peak = [widget.table.lesion_at(row) for row in range(len(lesions))]
    assert by_peak == sorted(lesions, key=lambda lesion: lesion.peak_score, reverse=True)
    peak = LESION_COLUMNS.index("peak")
    shown = [float(widget.table.item(row, peak).text()) for row in range(len(lesions))]
    assert shown == sorted(shown, reverse=True)
    widget.jump_to_lesion(0)  # the first row now: the most anomalous lesion
    centroid = widget.source.data_to_world(np.asarray(by_peak[0].centroid_voxel))
    np.testing.assert_allclose(widget.viewer.dims.point[-3:], centroid, atol=1.0)
    widget.table.sort_by("voxels")
    assert widget.table.lesion_at(0) == lesions[0]


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), oblique_affine() if affine is None else affine), path)
    return path


def test_label_files_open_as_labels_on_the_scan_grid_and_scans_as_images(viewer, scan_path, tmp_path):
    from napari.layers import Image, Labels

    _, lesion = synthetic_brain(shape=(40, 44, 12))
    gold = _save(tmp_path / "GOLD_STANDARD.nii.gz", lesion.astype(np.float32))  # stored as floats
    brats = np.zeros((40, 44, 12), np.int16)
    brats[10:14, 10:14, 4:8] = [[[1, 2, 4, 4]]]
    seg = _save(tmp_path / "patient.nii.gz", brats)  # no label word in the name: 4 values
    (scan,) = viewer.open(str(scan_path), plugin="napari-disyre")
    (gold_layer,) = viewer.open(str(gold), plugin="napari-disyre")
    (seg_layer,) = viewer.open(str(seg), plugin="napari-disyre")
    assert isinstance(scan, Image) and isinstance(gold_layer, Labels) and isinstance(seg_layer, Labels)
    assert gold_layer.data.dtype == np.uint8
    np.testing.assert_array_equal(gold_layer.data, lesion.astype(np.uint8))
    np.testing.assert_array_equal(seg_layer.data, brats)
    for layer in (gold_layer, seg_layer):
        np.testing.assert_allclose(layer.affine.affine_matrix, scan.affine.affine_matrix)
        assert layer.metadata["nifti_path"].endswith(".nii.gz")


def test_napari_opens_nifti_with_this_reader_without_asking(viewer, scan_path, napari_settings):
    from napari.layers import Image

    from napari_disyre.plugin.widget import DetectionWidget

    # plugin=None: what File > Open does (napari asks when more than one reader would do)
    with pytest.raises(Exception, match="Multiple plugins"):  # napari's own reader lists .nii.gz too
        viewer.open(str(scan_path), plugin=None)
    napari_settings.plugins.extension2reader = {"*.nii": "napari"}  # a choice the user made: kept
    DetectionWidget(viewer)
    assert napari_settings.plugins.extension2reader == {"*.nii": "napari", "*.nii.gz": "napari-disyre"}
    (layer,) = viewer.open(str(scan_path), plugin=None)
    assert isinstance(layer, Image)
    np.testing.assert_allclose(layer.affine.affine_matrix, nib.load(scan_path).affine, atol=1e-6)


def _dice(mask: np.ndarray, truth: np.ndarray) -> float:
    both = np.logical_and(mask > 0, truth > 0).sum()
    return 2 * both / ((mask > 0).sum() + (truth > 0).sum())


def test_dice_against_a_labels_layer_follows_the_threshold(qtbot, widget, tmp_path):
    viewer = widget.viewer
    assert widget.comparison.score.value == "open a label file to compare with"
    _, lesion = synthetic_brain(shape=(40, 44, 12))
    viewer.open(str(_save(tmp_path / "t1_seg.nii.gz", lesion.astype(np.uint8))), plugin="napari-disyre")
    assert widget.comparison.reference.value is viewer.layers["t1_seg"]  # offered and chosen
    assert widget.comparison.score.value == "no mask yet"
    widget.steps.value = 1
    click_detect(qtbot, widget)
    inside = widget.detection.anomaly_map[widget.detection.foreground]
    values = []
    for quantile in (0.95, 0.99):
        widget.threshold_box.value = float(np.quantile(inside, quantile))
        mask = viewer.layers["scan anomaly mask"].data
        dice = _dice(mask, lesion)
        precision = np.logical_and(mask > 0, lesion > 0).sum() / (mask > 0).sum()
        recall = np.logical_and(mask > 0, lesion > 0).sum() / lesion.sum()
        expected = f"{dice:.3f} (precision {precision:.3f}, recall {recall:.3f})"
        assert widget.comparison.score.value == expected
        values.append(dice)
    assert values[0] != values[1] and max(values) > 0
    viewer.add_labels(np.zeros((5, 5, 5), np.uint8), name="elsewhere")
    widget.comparison.reference.value = viewer.layers["elsewhere"]
    assert widget.comparison.score.value == "'elsewhere' is not on the scan's grid"
    assert "scan anomaly mask" not in [name for name, _ in widget.comparison._choices()]


def test_the_export_dialog_starts_at_home_for_the_bundled_demo(qtbot, widget, scan_path, monkeypatch, tmp_path):
    from napari_disyre.plugin.layers import PATH_KEY
    from napari_disyre.sample_data import demo_scan_path

    monkeypatch.setenv("HOME", str(tmp_path))
    asked = []
    monkeypatch.setattr(
        "napari_disyre.plugin.export.QFileDialog.getSaveFileName",
        lambda parent, title, start, filters: (asked.append(start), ("", ""))[1],
    )
    widget.steps.value = 1
    click_detect(qtbot, widget)
    scan = widget.viewer.layers["scan"]
    scan.metadata[PATH_KEY] = str(demo_scan_path())  # as File > Open Sample places the demo
    widget.export("mask")
    del scan.metadata[PATH_KEY]  # as a layer another reader made: napari's own record of its file
    assert scan.source.path == str(scan_path)
    widget.export("map")
    assert asked == [
        str(tmp_path / "demo_t1_scan_anomaly_mask.nii.gz"),
        str(scan_path.parent / "scan_anomaly_map.nii.gz"),
    ]


def test_napari_save_writes_the_4d_layers_as_nifti_with_no_plugin_named(qtbot, widget, scan_path, tmp_path):
    """File > Save (napari's save_layers) picks this plugin's writer for a .nii.gz name; the 4D
    layers come out as 4D NIfTI on the scan's grid, steps last."""
    from napari.plugins.io import save_layers
    from npe2 import PluginManager

    viewer = widget.viewer
    click_detect(qtbot, widget)
    source = nib.load(scan_path)
    writer = next(
        w
        for w in PluginManager.instance().iter_compatible_writers(["image"])
        if w.command == "napari-disyre.write_image"
    )
    for role in ("restorations", "accumulated map by step"):
        layer = viewer.layers[f"scan {role}"]
        for how, out in (("plugin=None", tmp_path / f"{role} a.nii.gz"), ("writer", tmp_path / f"{role} b.nii.gz")):
            if how == "plugin=None":
                written = save_layers(str(out), [layer], plugin=None)
            else:
                viewer.layers.selection = {layer}
                written = viewer.layers.save(str(out), selected=True, _writer=writer)
            assert written == [str(out)]
            image = nib.load(out)
            assert image.shape == (40, 44, 12, 2)
            np.testing.assert_allclose(image.affine, source.affine, atol=1e-6)
            np.testing.assert_allclose(np.asarray(image.dataobj), np.moveaxis(layer.data, 0, -1), atol=1e-6)


def test_file_menu_saves_the_selected_layer_as_nifti(qtbot, widget, scan_path, tmp_path, monkeypatch, errors):
    """File > IO Utilities > Save layer as NIfTI: the dialog offers NIfTI alone, beside the scan."""
    from npe2 import PluginManager

    from napari_disyre.plugin.export import save_layer_as_nifti

    menus = PluginManager.instance().get_manifest("napari-disyre").contributions.menus
    assert [item.command for item in menus["napari/file/io_utilities"]] == ["napari-disyre.save_layer_as_nifti"]
    viewer = widget.viewer
    viewer.layers.selection.clear()
    assert save_layer_as_nifti(viewer) == [] and errors[-1].splitlines()[0] == "No layer selected"
    click_detect(qtbot, widget)
    out = tmp_path / "chosen.nii.gz"
    asked = []
    monkeypatch.setattr(
        "napari_disyre.plugin.export.QFileDialog.getSaveFileName",
        lambda parent, title, start, filters: (asked.append((start, filters)), (str(out), filters))[1],
    )
    restorations = viewer.layers["scan restorations"]
    viewer.layers.selection.active = restorations
    assert save_layer_as_nifti(viewer) == [str(out)]
    assert asked == [(str(scan_path.parent / "scan_restorations.nii.gz"), "NIfTI (*.nii.gz *.nii)")]
    image = nib.load(out)
    np.testing.assert_allclose(image.affine, nib.load(scan_path).affine, atol=1e-6)
    np.testing.assert_allclose(np.asarray(image.dataobj), np.moveaxis(restorations.data, 0, -1), atol=1e-6)
