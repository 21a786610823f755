"""Issue 27, classes 7 and 8: resumable cohorts (--skip-existing skips a scan only when every requested
output exists; option formats checked before the first scan) and the tracebacks the probes found
(view without a display, --out that is a file, a full disk while saving the training state). Each
case: the issue's probe and a fresh variant."""

from __future__ import annotations

import pytest

from napari_disyre.cli import main
from napari_disyre.errors import OutputError

from .conftest import brain, save, snapshot


@pytest.fixture
def cohort(tmp_path, checkpoint_dir):
    for name in ("a", "b"):
        save(tmp_path / "in" / f"{name}.nii.gz", brain(seed=ord(name)))
    return ["detect", str(tmp_path / "in"), "--out-dir", str(tmp_path / "o"), "-c", str(checkpoint_dir), "--device", "cpu", "-q"]


def test_skip_existing_finishes_a_scan_that_has_its_map_but_not_its_mask(tmp_path, cohort, capsys):
    """The issue's probe: an interruption between a's map and its mask; the rerun writes the mask and
    keeps every existing file byte for byte."""
    assert main(cohort) == 0
    (tmp_path / "o" / "a_anomaly_mask.nii.gz").unlink()
    kept = snapshot(tmp_path / "o")
    capsys.readouterr()
    assert main([*cohort[:-1], "--skip-existing"]) == 0
    assert "a_anomaly_map.nii.gz kept; writing the rest" in capsys.readouterr().err
    after = snapshot(tmp_path / "o")
    assert {k: v for k, v in after.items() if k in kept} == kept
    assert sorted(after) == ["a_anomaly_map.nii.gz", "a_anomaly_mask.nii.gz", "b_anomaly_map.nii.gz", "b_anomaly_mask.nii.gz"]


def test_skip_existing_runs_a_scan_missing_a_newly_requested_output(tmp_path, checkpoint_dir):
    """The fresh variant: the map exists, the rerun also asks for the mask: the scan is not skipped."""
    scan = save(tmp_path / "in" / "a.nii.gz", brain())
    base = ["detect", str(scan), "-c", str(checkpoint_dir), "--device", "cpu", "-q", "--out-map", str(tmp_path / "map.nii.gz")]
    assert main(base) == 0
    kept = (tmp_path / "map.nii.gz").read_bytes()
    assert main([*base, "--out-mask", str(tmp_path / "mask.nii.gz"), "--skip-existing"]) == 0
    assert (tmp_path / "map.nii.gz").read_bytes() == kept and (tmp_path / "mask.nii.gz").exists()


@pytest.mark.parametrize("threshold", ["0.5,0.7", "high", "nan"])
def test_a_bad_threshold_is_refused_before_the_first_scan(tmp_path, cohort, monkeypatch, capsys, threshold):
    monkeypatch.setattr("napari_disyre.detection.pipeline.restore_stack", lambda *a, **k: pytest.fail("the model ran"))
    assert main([*cohort, f"--threshold={threshold}"]) == 2
    assert "argument --threshold: value" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_view_and_demo_without_a_display_are_a_clear_error_not_a_qt_abort(monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert main(["view"]) == 2  # the probe
    assert "no display to open napari on (DISPLAY and WAYLAND_DISPLAY unset)" in capsys.readouterr().err
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")  # a fresh variant: a platform that needs X11
    assert main(["demo"]) == 2
    assert "QT_QPA_PLATFORM=xcb" in capsys.readouterr().err


def test_outputs_that_are_files_are_refused(tmp_path, capsys, checkpoint_dir):
    save(tmp_path / "in" / "a.nii.gz", brain())
    (tmp_path / "o").write_text("a file, not a folder")
    before = snapshot(tmp_path)
    assert main(["detect", str(tmp_path / "in"), "--out-dir", str(tmp_path / "o"), "-c", str(checkpoint_dir), "-q"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_a_full_disk_while_saving_the_training_state_is_an_output_error(tmp_path, monkeypatch):
    import torch

    from napari_disyre.training.state import write_state

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    (tmp_path / "run" / "training").mkdir(parents=True)
    (tmp_path / "run" / "training" / "state.pt").write_bytes(b"the previous state")
    with pytest.raises(OutputError, match="the training state could not be saved .*previous state, if any, is kept"):
        write_state(tmp_path / "run", {"step": 3})
    assert (tmp_path / "run" / "training" / "state.pt").read_bytes() == b"the previous state"
    assert [p.name for p in (tmp_path / "run" / "training").iterdir()] == ["state.pt"]
