"""Qt-free parts of the napari face: which files are label volumes, the notifications' first line,
and where the export dialog starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from napari_disyre.detection.display import export_suggestion
from napari_disyre.errors import SHORT_LINE_CHARS, CheckpointError, InputError, short_first_line
from napari_disyre.sample_data import demo_scan_path, is_bundled
from napari_disyre.scans.labels import MAX_LABEL_VALUES, as_labels, is_label_name
from napari_disyre.scans.nifti import Volume


def _volume(data, name: str | None = "scan.nii.gz") -> Volume:
    return Volume(data=np.asarray(data, np.float32), affine=np.eye(4), path=Path(name) if name else None)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("GOLD_STANDARD.nii.gz", True),
        ("BraTS19_2013_2_1_seg.nii.gz", True),
        ("sub-01_lesion-mask.nii", True),
        ("t1_label.nii.gz", True),
        ("aparc+aseg.nii.gz", True),
        ("segmentation.nii.gz", True),
        ("brainmask.nii.gz", False),  # FreeSurfer's skull-stripped scan: intensities
        ("sub-01_T1w.nii.gz", False),
        ("segment_of_scan.nii.gz", False),
    ],
)
def test_label_names(name, label):
    assert is_label_name(name) is label


def test_few_integer_values_are_labels_whatever_the_name():
    brats = np.zeros((4, 4, 4))
    brats[0, 0, :4] = [1, 2, 4, 4]
    labels = as_labels(_volume(brats, "patient.nii.gz"))
    assert labels is not None and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, brats)
    wide = np.arange(4 * 4 * 4).reshape(4, 4, 4) * 300  # 64 values, one above 255
    assert as_labels(_volume(wide, None)).dtype == np.uint16


def test_intensities_fractions_and_negatives_stay_images():
    rng = np.random.default_rng(0)
    scan_like = rng.integers(0, 1000, (8, 8, 8))  # an integer-valued scan: hundreds of values
    assert len(np.unique(scan_like)) > MAX_LABEL_VALUES
    assert as_labels(_volume(scan_like)) is None
    assert as_labels(_volume(rng.random((4, 4, 4)), "seg.nii.gz")) is None  # a soft map named seg
    assert as_labels(_volume(-np.ones((4, 4, 4)), "mask.nii.gz")) is None
    # named like labels: integers with many values are labels too (e.g. a parcellation)
    assert as_labels(_volume(scan_like, "parcellation_labels.nii.gz")) is not None


def test_the_first_line_is_the_reason_in_40_characters():
    assert short_first_line("/a/b.nii.gz: scan file not found.", "x") == "Scan file not found.\nFile: /a/b.nii.gz"
    assert short_first_line("Nothing to export yet: run Detect anomalies first.", "x").splitlines() == [
        "Nothing to export yet",
        "Run Detect anomalies first.",
    ]
    long = "the scan's affine gives a voxel size of 0 mm, so its voxels have no place in space"
    assert short_first_line(f"/x/y.nii: {long}. Repair it.", "Input cannot be used").splitlines() == [
        "Input cannot be used",
        long[:1].upper() + long[1:] + ".",
        "Repair it.",
        "File: /x/y.nii",
    ]
    text = short_first_line("/c: short.", "Not a checkpoint", title_first=True)
    assert text.splitlines() == ["Not a checkpoint", "Short.", "File: /c"]


@given(st.text(min_size=1, max_size=300), st.text(min_size=1, max_size=80), st.booleans())
def test_no_first_line_is_longer_than_40_characters(message, title, title_first):
    first = short_first_line(message, title, title_first=title_first).split("\n")[0]
    assert len(first) <= SHORT_LINE_CHARS


def test_errors_carry_a_short_title():
    assert InputError("x").title == "Input cannot be used"
    assert CheckpointError("x", title="Not a checkpoint").title == "Not a checkpoint"
    assert CheckpointError("y").title == "Checkpoint not usable"  # the class's default is untouched


def test_the_export_dialog_starts_beside_the_scan_or_at_home_for_the_demo(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert is_bundled(demo_scan_path()) and not is_bundled(tmp_path / "scan.nii.gz")
    assert export_suggestion("/data/sub-01_T1w.nii.gz", "sub-01_T1w", "anomaly_map") == Path(
        "/data/sub-01_T1w_anomaly_map.nii.gz"
    )
    assert export_suggestion(demo_scan_path(), "DISYRE demo brain", "anomaly_mask") == (
        tmp_path / "demo_t1_scan_anomaly_mask.nii.gz"
    )
    assert export_suggestion(None, "pasted", "anomaly_map") == tmp_path / "pasted_anomaly_map.nii.gz"
