"""The display choices the widget applies, decided in the core: contrast limits, the axial first view,
suggested output names and notification text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_disyre.detection.display import THRESHOLD_FRACTION, axial_view, map_contrast_limits, output_name
from napari_disyre.errors import reason_first


def _fraction(limits: tuple[float, float], threshold: float) -> float:
    low, high = limits
    return (threshold - low) / (high - low)


def test_contrast_limits_are_the_brain_median_and_top_percentile_when_the_threshold_fits():
    scores = np.linspace(0.0, 1.0, 100_001, dtype=np.float32)  # median 0.5, 99.9th percentile 0.999
    brain = np.ones_like(scores, dtype=bool)
    low, high = map_contrast_limits(scores, brain, threshold=0.7)
    assert low == pytest.approx(0.5) and high == pytest.approx(0.999)
    assert THRESHOLD_FRACTION[0] <= _fraction((low, high), 0.7) <= THRESHOLD_FRACTION[1]


def test_contrast_limits_move_so_the_threshold_is_inside():
    # the real MS scan of issue 16: every brain score below the suggested threshold (top 0.077 < 0.082)
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 0.077, size=50_000).astype(np.float32)
    brain = np.ones_like(scores, dtype=bool)
    limits = map_contrast_limits(scores, brain, threshold=0.082)
    assert _fraction(limits, 0.082) == pytest.approx(THRESHOLD_FRACTION[1])  # at the upper margin
    # a threshold below the median: the floor drops until the threshold is at the lower margin
    limits = map_contrast_limits(scores, brain, threshold=0.01)
    assert _fraction(limits, 0.01) == pytest.approx(THRESHOLD_FRACTION[0])
    assert limits[1] == pytest.approx(np.quantile(scores, 0.999))


def test_contrast_limits_ignore_voxels_outside_the_brain_and_survive_a_flat_map():
    scores = np.zeros((10, 10), np.float32)
    scores[:5] = 1000.0  # outside the brain: must not set the top
    brain = np.zeros_like(scores, dtype=bool)
    brain[5:] = True
    scores[5:] = np.linspace(0, 1, 50).reshape(5, 10)
    assert map_contrast_limits(scores, brain, 0.6)[1] < 2
    low, high = map_contrast_limits(np.zeros((4, 4)), np.ones((4, 4), bool), threshold=0.0)
    assert high > low and low <= 0.0 <= high


def test_axial_view_slides_along_the_axis_nearest_superior():
    ras = np.diag([1.0, 1.0, 1.0, 1.0])
    view = axial_view(ras)
    assert view.order == (2, 1, 0) and (view.vertical, view.horizontal) == ("up", "left")
    # a scan stored superior-first (axis 0 goes up, axis 1 anterior, axis 2 to the left)
    sia = np.zeros((4, 4))
    sia[2, 0], sia[1, 1], sia[0, 2], sia[3, 3] = 1.2, 1.0, -0.9, 1.0
    assert axial_view(sia).order == (0, 1, 2)
    # sagittal-first: axis 0 left-right, axis 1 superior, axis 2 anterior, slightly oblique
    rotation = np.array([[0.99, 0.0, 0.1], [0.0, 0.1, 0.99], [0.1, 0.99, 0.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation
    assert axial_view(affine).order == (1, 2, 0)


def test_output_names_sit_beside_the_scan():
    assert output_name("/data/sub-01_T1w.nii.gz", "anomaly_mask") == Path(
        "/data/sub-01_T1w_anomaly_mask.nii.gz"
    )
    assert output_name(Path("scan.nii"), "anomaly_map") == Path("scan_anomaly_map.nii.gz")


def test_messages_put_the_reason_first_and_the_path_in_full_last():
    path = "/data/user/some/very/long/folder/name/that/would/fill/a/toast/checkpoint"
    text = reason_first(
        f"{path}: no unet/ folder, so this is not a DISYRE checkpoint. Give the folder above."
    )
    assert text.splitlines() == [
        "No unet/ folder, so this is not a DISYRE checkpoint.",
        "Give the folder above.",
        f"File: {path}",
    ]
    assert reason_first("/a/b.nii.gz: scan file not found.") == "Scan file not found.\nFile: /a/b.nii.gz"
    plain = "choose a checkpoint (folder or .safetensors file) first."
    assert reason_first(plain) == "Choose a checkpoint (folder or .safetensors file) first."
    long_reason = "the weights do not fit the UNet config: " + "conv_in.weight has shape (8, 1, 3, 3) " * 3
    first, rest, file_line = reason_first(f"/x/y.safetensors: {long_reason}").splitlines()
    assert len(first) <= 70 and first.endswith("...") and rest.startswith("...")
    assert file_line == "File: /x/y.safetensors"


def test_sliders_are_named_after_the_anatomical_axes():
    from napari_disyre.detection.display import anatomical_axis_labels

    assert anatomical_axis_labels(np.diag([-1.0, -1.0, 2.0, 1.0])) == (
        "left-right",
        "posterior-anterior",
        "inferior-superior",
    )
    sagittal_first = np.zeros((4, 4))
    sagittal_first[1, 0], sagittal_first[2, 1], sagittal_first[0, 2] = 1.0, -1.0, 1.0
    assert anatomical_axis_labels(sagittal_first) == ("posterior-anterior", "inferior-superior", "left-right")
    assert anatomical_axis_labels(np.ones((4, 4))) == ("axis 0", "axis 1", "axis 2")
