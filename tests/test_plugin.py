"""The napari plugin driven as a user would: reader/writer round trip, sample, widget runs."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from napari_disyre.detection.postprocess import threshold_mask

from .conftest import click_detect

pytest.importorskip("napari")


def test_plugin_import_does_not_import_torch():
    code = (
        "import sys, napari_disyre.plugin.widget, napari_disyre.plugin.io; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_reader_writer_round_trip_keeps_data_and_oblique_affine(viewer, scan_path, tmp_path):
    (layer,) = viewer.open(str(scan_path), plugin="napari-disyre")
    source = nib.load(scan_path)
    np.testing.assert_allclose(layer.affine.affine_matrix, source.affine, atol=1e-6)
    mask = viewer.add_labels(
        (layer.data > 320).astype(np.uint8), affine=layer.affine, metadata=layer.metadata
    )
    out = tmp_path / "mask.nii.gz"
    viewer.layers.selection = {mask}
    viewer.layers.save(str(out), selected=True, plugin="napari-disyre")
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(written.dataobj), mask.data)
    (again,) = viewer.open(str(out), plugin="napari-disyre")
    np.testing.assert_array_equal(again.data, mask.data)


def test_sample_data_is_the_bundled_demo(viewer):
    layers = viewer.open_sample("napari-disyre", "demo_brain")
    scan, truth = layers
    assert scan.data.shape == truth.data.shape == (153, 189, 159)
    assert int(truth.data.sum()) == 19419


def test_detect_threshold_rerun_and_export(qtbot, widget, scan_path, tmp_path):
    viewer = widget.viewer
    click_detect(qtbot, widget)
    scan = viewer.layers["scan"]
    restorations, anomaly_map, mask = (
        viewer.layers[f"scan {n}"] for n in ("restorations", "anomaly map", "anomaly mask")
    )
    assert restorations.data.shape == (2, 40, 44, 12)
    assert anomaly_map.data.shape == mask.data.shape == (40, 44, 12)
    for layer in (anomaly_map, mask):
        np.testing.assert_allclose(layer.affine.affine_matrix, scan.affine.affine_matrix)
    np.testing.assert_allclose(restorations.affine.affine_matrix[1:, 1:], scan.affine.affine_matrix)
    # the threshold drives the mask exactly as the core post-processing says
    detection = widget.detection
    for threshold, min_size in (
        (float(np.quantile(anomaly_map.data[detection.foreground], 0.9)), 0),
        (0.0, 5),
    ):
        widget.min_size.value = min_size
        widget.threshold_box.value = threshold
        shown = widget.threshold_box.value  # the box shows 4 decimals; the mask follows what it shows
        assert shown == pytest.approx(threshold, abs=5e-5)
        expected = threshold_mask(anomaly_map.data, shown, min_size=min_size, region=detection.foreground)
        assert int(mask.data.sum()) == int(expected.sum()) > 0
        assert widget.table.rowCount() == len(widget.lesions) >= 1
    widget.jump_to_lesion(0)
    centroid = scan.data_to_world(np.asarray(widget.lesions[0].centroid_voxel))
    np.testing.assert_allclose(viewer.dims.point[-3:], centroid, atol=1.0)
    # export: same affine and voxels as the mask; an existing file is not replaced
    out = tmp_path / "exported_mask.nii.gz"
    assert widget.export("mask", str(out)) == out
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, nib.load(scan_path).affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj), mask.data)
    before = out.read_bytes()
    widget.threshold_box.value = float(anomaly_map.data.max()) * 2
    assert widget.export("mask", str(out)) is None and out.read_bytes() == before
    # a second run replaces the outputs in place
    n_layers, layer_ids = len(viewer.layers), [id(layer) for layer in viewer.layers]
    click_detect(qtbot, widget)
    assert len(viewer.layers) == n_layers and [id(layer) for layer in viewer.layers] == layer_ids


def test_event_loop_runs_during_detection_and_cancel_keeps_viewer_usable(qtbot, widget, errors):
    from qtpy.QtCore import QTimer

    widget.steps.value = 40
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(5)
    widget.run()
    assert not widget.detect_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=30_000)
    widget.cancel()
    widget.cancel()  # twice: harmless
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    timer.stop()
    assert len(ticks) > 5  # the Qt event loop kept running while the model worked
    assert widget.status.value == "cancelled" and widget.detection is None
    assert widget.detect_button.enabled and not errors
    widget.steps.value = 1
    click_detect(qtbot, widget)  # still usable
    assert widget.detection is not None


def test_user_mistakes_give_notifications(qtbot, widget, tmp_path, errors):
    widget.export("mask", str(tmp_path / "early.nii.gz"))
    assert "Nothing to export" in errors[-1] and not (tmp_path / "early.nii.gz").exists()
    viewer = widget.viewer
    widget.checkpoint.value = tmp_path  # a folder that is not a checkpoint
    click_detect(qtbot, widget)
    assert errors[-1].endswith(f"File: {tmp_path}") and widget.detection is None
    viewer.add_image(np.ones((20, 20)), name="flat")
    widget.scan.value = viewer.layers["flat"]
    widget.run()
    assert "3D scan" in errors[-1]
    viewer.layers.clear()
    widget.run()
    assert errors[-1].startswith("No image layer")
    widget.cancel()  # nothing running: no error
    assert widget.worker is None


def test_labels_layer_is_refused():
    from napari.layers import Labels

    from napari_disyre.errors import InputError
    from napari_disyre.plugin.layers import volume_from_layer

    with pytest.raises(InputError, match="labels layer"):
        volume_from_layer(Labels(np.zeros((4, 4, 4), np.uint8), name="mask"))


def test_choosing_a_checkpoint_sets_its_default_steps_and_method(qtbot, widget, tmp_path, tiny_checkpoint):
    from napari_disyre.disyre.checkpoint import save_checkpoint

    s8 = save_checkpoint(tmp_path / "s8", tiny_checkpoint.with_info(steps=8, method="multi-step-restoration"))
    s3 = save_checkpoint(tmp_path / "s3.safetensors", tiny_checkpoint.with_info(steps=3))
    widget.checkpoint.value = s8
    assert (widget.steps.value, widget.method.value) == (8, "multi-step-restoration")
    assert widget.checkpoint_kind.value == "folder" and "S = 8" in widget.checkpoint_info.value
    widget.checkpoint.value = s3
    assert (widget.steps.value, widget.method.value) == (3, "mean-single-step")
    assert widget.checkpoint_kind.value == ".safetensors file" and widget.checkpoint.mode.value == "r"
    widget.checkpoint.value = s8
    click_detect(qtbot, widget)  # the run uses what the controls show: the checkpoint's S = 8, multi-step
    assert (
        widget.detection.settings.steps == 8 and widget.detection.settings.method == "multi-step-restoration"
    )
    assert len(widget.detection.timesteps) == 8


def test_the_fast_checkbox_runs_fast_mode_with_one_step(qtbot, widget, checkpoint_dir, scan_path):
    """The widget's fast mode is the CLI's --fast: half-window steps and S = 1, the same map as the core."""
    from napari_disyre import load_checkpoint
    from napari_disyre.detection.pipeline import default_settings, detect
    from napari_disyre.scans.nifti import load_scan

    widget.fast.value = True
    assert widget.steps.value == 1
    click_detect(qtbot, widget)
    settings = widget.detection.settings
    assert settings.fast and settings.steps == 1 and len(widget.detection.timesteps) == 1
    checkpoint = load_checkpoint(checkpoint_dir)
    expected = detect(load_scan(scan_path), checkpoint, default_settings(checkpoint, fast=True), device="cpu")
    np.testing.assert_allclose(widget.detection.anomaly_map, expected.anomaly_map, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_rewritten_on_disk_is_reloaded(qtbot, widget, checkpoint_dir, scan_path):
    from napari_disyre import load_checkpoint
    from napari_disyre.detection.pipeline import default_settings, detect
    from napari_disyre.disyre.checkpoint import Checkpoint, CheckpointInfo, save_checkpoint
    from napari_disyre.disyre.schedule import Schedule
    from napari_disyre.scans.nifti import load_scan

    from .conftest import make_unet

    click_detect(qtbot, widget)
    first = widget.detection.anomaly_map
    held = widget.checkpoints.get(checkpoint_dir)
    assert widget.checkpoints.get(checkpoint_dir) is held  # unchanged files: the same model, not reloaded
    retrained = Checkpoint(unet=make_unet(seed=1), schedule=Schedule(), info=CheckpointInfo())
    save_checkpoint(checkpoint_dir, retrained, overwrite=True)  # a retrain into the same folder
    click_detect(qtbot, widget)
    expected = detect(
        load_scan(scan_path),
        load_checkpoint(checkpoint_dir),
        default_settings(retrained, steps=2),
        device="cpu",
    )
    np.testing.assert_allclose(widget.detection.anomaly_map, expected.anomaly_map, rtol=1e-5, atol=1e-6)
    assert not np.allclose(first, widget.detection.anomaly_map)


def test_layers_after_detection_read_well_and_every_one_saves(qtbot, widget, scan_path, tmp_path):
    """Bottom to top: scan, restorations and the map after each step (hidden, on the "step" slider),
    the translucent map, the mask's outline; the threshold inside the map's contrast limits; every
    layer saved by napari's File > Save on the scan's grid, 4D ones as 4D NIfTI."""
    from napari_disyre.detection.display import map_contrast_limits

    viewer = widget.viewer
    click_detect(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    roles = ("restorations", "accumulated map by step", "anomaly map", "anomaly mask")
    assert names == ["scan", *(f"scan {role}" for role in roles)]
    restorations, steps, anomaly_map, mask = (viewer.layers[f"scan {role}"] for role in roles)
    assert not restorations.visible and not steps.visible and anomaly_map.visible and mask.visible
    assert anomaly_map.blending == steps.blending == "translucent"
    assert anomaly_map.colormap.name == "DISYRE heat" and anomaly_map.colormap.map([0.0])[0, 3] == 0
    assert mask.contour == 1
    detection = widget.detection
    low, high = anomaly_map.contrast_limits
    expected = map_contrast_limits(detection.anomaly_map, detection.foreground, widget.threshold_box.value)
    assert (low, high) == pytest.approx(expected) and low < widget.threshold_box.value < high
    assert tuple(steps.contrast_limits) == pytest.approx(expected)
    # the map after each step: S of them, the last is the final map
    assert steps.data.shape == restorations.data.shape == (2, 40, 44, 12)
    np.testing.assert_array_equal(steps.data[-1], anomaly_map.data)
    viewer.dims.set_current_step(0, 0)  # the slider's first position: step 1 of S, not 0
    assert viewer.dims.axis_labels[0] == "step 1 of 2"
    viewer.dims.set_current_step(0, 1)
    assert viewer.dims.axis_labels[0] == "step 2 of 2" and restorations.axis_labels[0] == "step 2 of 2"
    assert restorations.affine.affine_matrix.shape == (5, 5)
    source = nib.load(scan_path)
    for layer in (restorations, steps, anomaly_map, mask):
        out = tmp_path / f"{layer.name}.nii.gz"
        viewer.layers.selection = {layer}
        viewer.layers.save(str(out), selected=True, plugin="napari-disyre")
        written = nib.load(out)
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
        data = np.asarray(written.dataobj)
        expected_data = np.moveaxis(layer.data, 0, -1) if layer.ndim == 4 else layer.data
        np.testing.assert_allclose(data, expected_data, atol=1e-6)


def test_user_display_settings_survive_a_rerun(qtbot, widget):
    viewer = widget.viewer
    click_detect(qtbot, widget)
    anomaly_map, mask = viewer.layers["scan anomaly map"], viewer.layers["scan anomaly mask"]
    anomaly_map.colormap, anomaly_map.opacity, anomaly_map.contrast_limits = "viridis", 0.3, (0.0, 0.5)
    mask.contour, mask.opacity = 0, 0.4
    viewer.layers["scan restorations"].visible = True
    widget.steps.value = 1
    click_detect(qtbot, widget)
    assert anomaly_map.colormap.name == "viridis" and anomaly_map.opacity == pytest.approx(0.3)
    assert tuple(anomaly_map.contrast_limits) == (0.0, 0.5)
    assert mask.contour == 0 and mask.opacity == pytest.approx(0.4)
    assert viewer.layers["scan restorations"].visible
    # limits the user never touched follow the new map
    steps = viewer.layers["scan accumulated map by step"]
    assert steps.data.shape[0] == 1 and tuple(steps.contrast_limits) != (0.0, 0.5)


def test_a_long_error_shows_its_reason_first_and_the_caption_says_so(qtbot, widget, tmp_path, errors):
    deep = tmp_path.joinpath(*["a_rather_long_folder_name"] * 6)
    deep.mkdir(parents=True)
    widget.checkpoint.value = deep
    caption = widget.checkpoint_info.value.splitlines()
    reason = "No unet/ folder and no berdiff.json: not a checkpoint of either method."
    assert caption[:2] == ["Not a checkpoint", reason]
    assert caption[-1] == f"File: {deep}"
    click_detect(qtbot, widget)
    lines = errors[-1].splitlines()
    assert lines[0] == "Not a checkpoint" and lines[1].startswith("No unet/ folder")
    assert lines[-1] == f"File: {deep}"
    widget.checkpoint.value = tmp_path / "missing"
    assert widget.checkpoint_info.value.splitlines()[0] == "Checkpoint not found"


def test_export_follows_the_layers_and_the_dialog_starts_beside_the_scan(
    qtbot, widget, scan_path, tmp_path, errors, monkeypatch
):
    viewer = widget.viewer
    click_detect(qtbot, widget)
    mask = viewer.layers["scan anomaly mask"]
    edited = np.zeros_like(mask.data)
    edited[10:14, 10:14, 5] = 1  # the user paints the mask by hand: export writes what they see
    mask.data = edited
    out = widget.export("mask", str(tmp_path / "edited.nii.gz"))
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), edited)
    asked = []
    monkeypatch.setattr(
        "napari_disyre.plugin.export.QFileDialog.getSaveFileName",
        lambda parent, title, start, filters: (asked.append(start), ("", ""))[1],
    )
    widget.export("map")
    assert asked == [str(scan_path.parent / "scan_anomaly_map.nii.gz")]
    viewer.layers.remove(mask)
    assert widget.export("mask", str(tmp_path / "gone.nii.gz")) is None
    assert "anomaly mask layer was deleted" in errors[-1] and not (tmp_path / "gone.nii.gz").exists()


def test_two_results_side_by_side_each_with_its_own_threshold(qtbot, widget, errors):
    from napari_disyre.plugin.results import viewer_grid

    viewer = widget.viewer
    click_detect(qtbot, widget)
    widget.compare()
    assert "Only one result" in errors[-1] and not viewer_grid(viewer).enabled
    first_threshold = widget.threshold_box.value
    kept = widget.keep_result()
    assert kept == f"scan [S=2 mean-single-step, ckpt, t={first_threshold:.4f}]"
    kept_mask = viewer.layers[f"{kept} anomaly mask"].data.copy()
    widget.steps.value = 1
    click_detect(qtbot, widget)
    widget.threshold_box.value = float(
        np.quantile(widget.detection.anomaly_map[widget.detection.foreground], 0.5)
    )
    widget.compare()
    assert viewer_grid(viewer).enabled and viewer_grid(viewer).stride == 3
    cells = [[layer.name for layer in viewer.layers][i : i + 3] for i in (0, 3)]
    assert cells == [
        ["scan", "scan anomaly map", "scan anomaly mask"],
        [f"{kept} scan copy", f"{kept} anomaly map", f"{kept} anomaly mask"],
    ]
    np.testing.assert_array_equal(viewer.layers[f"{kept} anomaly mask"].data, kept_mask)
    assert viewer.layers["scan anomaly mask"].data.sum() > kept_mask.sum()  # its own, lower threshold
    assert viewer.layers[f"{kept} scan copy"].data is viewer.layers["scan"].data  # no copy of the voxels
    widget.compare()
    assert not viewer_grid(viewer).enabled and f"{kept} scan copy" not in viewer.layers


def test_the_lesion_table_shows_every_column(qtbot, widget):
    click_detect(qtbot, widget)
    header = widget.table.horizontalHeader()
    assert widget.table.rowCount() >= 1
    assert widget.table.minimumWidth() >= header.length()
    for column in range(widget.table.columnCount()):
        text = widget.table.horizontalHeaderItem(column).text()
        assert header.sectionSize(column) >= widget.table.fontMetrics().horizontalAdvance(text)


def test_a_berdiff_checkpoint_shows_L_and_P_and_adds_the_flip_mask_layer(
    qtbot, widget, tmp_path, checkpoint_dir
):
    from napari_disyre.berdiff.checkpoint import save_berdiff

    from .berdiff_tiny import tiny_berdiff

    berdiff = save_berdiff(tmp_path / "bd", tiny_berdiff(noise_level=7, threshold=0.5))
    widget.checkpoint.value = berdiff
    shown = {w.label: not w.native.isHidden() for w in (widget.steps, widget.method, *widget.berdiff.widgets)}
    assert shown == {
        "steps": False,
        "method": False,
        "noise level L": True,
        "flip threshold P": True,
        "map against": True,
    }
    assert (widget.berdiff.noise_level.value, widget.berdiff.flip_threshold.value) == (7, 0.5)
    assert "defaults L = 7, P = 0.5" in widget.checkpoint_info.value
    assert widget.berdiff.reference.value == "input"  # the official map unless asked
    widget.berdiff.noise_level.value = 11  # the run takes what the controls show
    click_detect(qtbot, widget)
    detection = widget.detection
    settings = detection.settings
    assert (detection.method, settings.noise_level, settings.threshold, settings.reference) == (
        "berdiff",
        11,
        0.5,
        "input",
    )
    layers = {layer.name for layer in widget.viewer.layers}
    assert {"scan restorations", "scan anomaly map", "scan flip mask", "scan anomaly mask"} <= layers
    flip = widget.viewer.layers["scan flip mask"]
    np.testing.assert_array_equal(flip.data, detection.flip_mask)
    assert flip.data.shape == detection.scan.shape and 0 < flip.data.max() <= 1
    assert tuple(flip.contrast_limits) == pytest.approx((0.0, float(flip.data.max())))  # its own range
    # decoded restorations at the kept reverse steps (every 10th, and the last)
    assert detection.timesteps == [1, 0] and widget.viewer.layers["scan restorations"].data.shape[0] == 2
    # threshold, lesion table and export unchanged
    widget.threshold_box.value = float(np.quantile(detection.anomaly_map[detection.foreground], 0.99))
    assert widget.table.rowCount() == len(widget.lesions) > 0
    written = widget.export("mask", str(tmp_path / "mask.nii.gz"))
    assert np.array_equal(nib.load(written).get_fdata() > 0, widget.current_mask())
    widget.berdiff.reference.value = "reconstruction"  # the same draws, another map
    click_detect(qtbot, widget)
    assert widget.detection.settings.reference == "reconstruction"
    assert np.array_equal(widget.detection.flip_mask, detection.flip_mask)
    assert not np.allclose(widget.detection.anomaly_map, detection.anomaly_map)
    # back to a DISYRE checkpoint: steps and method again, and no stale flip mask after its run
    widget.checkpoint.value = checkpoint_dir
    assert widget.controls.kind == "disyre" and not widget.steps.native.isHidden()
    widget.steps.value = 1
    click_detect(qtbot, widget)
    assert "scan flip mask" not in {layer.name for layer in widget.viewer.layers}
    assert widget.viewer.layers["scan accumulated map by step"].data.shape[0] == 1


def test_the_bundled_berdiff_model_is_captioned_as_a_demonstration_that_detects_no_lesions(widget):
    from napari_disyre.sample_data import demo_checkpoint_path

    widget.checkpoint.value = demo_checkpoint_path("berdiff")
    assert widget.checkpoint_info.value.startswith(
        "a demonstration of the pipeline that does not detect lesions"
    )
    assert "defaults L = 100, P = 0.6" in widget.checkpoint_info.value


def test_demo_refuses_steps_for_the_berdiff_model_before_opening_napari(capsys, monkeypatch):
    from napari_disyre.cli import main

    monkeypatch.setattr("napari_disyre.plugin.viewer.viewer_with_widget", lambda *a: pytest.fail("opened"))
    assert main(["demo", "--method", "berdiff", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "--steps sets DISYRE's step count" in err and err.count("\n") == 1


def test_map_post_processing_in_the_widget_is_the_core_one(
    qtbot, widget, checkpoint_dir, scan_path, tmp_path
):
    """Erosion and median act on the stored map (no re-run) exactly as MapPostprocessing does; the
    map layer, threshold mask and export follow; a checkpoint's recorded default sets the controls."""
    import json

    from napari_disyre.detection.postprocess import MapPostprocessing

    click_detect(qtbot, widget)
    raw = widget.detection.anomaly_map.copy()
    foreground = widget.detection.foreground
    widget.postprocess.erosion.value = 2
    widget.postprocess.median.value = 3
    expected = MapPostprocessing(erosion=2, median=3).apply(raw, foreground)
    assert not np.array_equal(expected, raw)
    np.testing.assert_array_equal(widget.detection.anomaly_map, expected)
    np.testing.assert_array_equal(widget.viewer.layers["scan anomaly map"].data, expected)
    mask = threshold_mask(
        expected, widget.threshold_box.value, min_size=widget.min_size.value, region=foreground
    )
    np.testing.assert_array_equal(widget.viewer.layers["scan anomaly mask"].data, mask)
    out = widget.export("map", str(tmp_path / "map.nii.gz"))
    np.testing.assert_allclose(np.asarray(nib.load(out).dataobj), expected)
    widget.postprocess.erosion.value = widget.postprocess.median.value = 0
    np.testing.assert_array_equal(widget.detection.anomaly_map, raw)
    meta = checkpoint_dir / "disyre.json"
    meta.write_text(
        json.dumps({**json.loads(meta.read_text()), "postprocessing": {"erosion": 4, "median": 5}})
    )
    widget.checkpoint.value = tmp_path  # another path, then back: the caption and defaults are re-read
    widget.checkpoint.value = checkpoint_dir
    assert (widget.postprocess.erosion.value, widget.postprocess.median.value) == (4, 5)


def test_the_runtime_choice_runs_onnxruntime_and_shows_the_export_as_progress(qtbot, widget):
    """auto by default; onnxruntime gives the torch map to 1e-5, its export shown as a progress stage."""
    pytest.importorskip("onnxruntime")
    from napari_disyre.runtime.sessions import LOADING_STAGE, RUNTIME_CHOICES

    assert tuple(widget.runtime.choices) == RUNTIME_CHOICES and widget.runtime.value == "auto"
    widget.runtime.value = "torch"
    click_detect(qtbot, widget)
    expected = widget.detection
    statuses: list[str] = []
    show = widget._on_progress

    def recording(update):
        show(update)
        statuses.append(widget.status.value)

    widget._on_progress = recording  # connected when the run starts
    widget.runtime.value = "onnxruntime"
    click_detect(qtbot, widget)
    assert (expected.runtime, widget.detection.runtime) == ("torch", "onnxruntime")
    assert LOADING_STAGE in statuses
    difference = np.abs(widget.detection.anomaly_map - expected.anomaly_map).max()
    assert difference < 1e-5 * expected.anomaly_map.max()
