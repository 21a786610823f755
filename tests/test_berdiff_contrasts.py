"""``napari-disyre train --method berdiff`` on several contrasts (issue 29): (C, H, W) slices squared
as hand-computed, a two-contrast model trained from patient folders through the command line, its
berdiff.json naming the contrasts in channel order, and detection asking for one scan per contrast."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_disyre import load_checkpoint  # noqa: E402
from napari_disyre.berdiff.stage_data import square_slices  # noqa: E402
from napari_disyre.cli import main  # noqa: E402
from napari_disyre.detection.detectors import contrasts_of, read_contrasts  # noqa: E402
from napari_disyre.errors import CheckpointError  # noqa: E402

from .conftest import two_contrast_patients  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TWO = ["--scan-name", "flair=flair.nii.gz", "--scan-name", "t2=t2.nii.gz"]
FAST = ["--method", "berdiff", "--preset", "small", "--batch-size", "2", "--ae-steps", "2",
        "--diffusion-steps", "2", "--noise-level", "3", "--spacing", "2", "2", "2"]  # fmt: skip


def test_square_slices_of_several_channels_are_placed_as_hand_computed():
    """A (2, 2, 6) slice into 4 x 4: its rows 0-1 land at rows 1-2 ((4 - 2) // 2 = 1), its columns
    1-4 (the centre cut of 6: (6 - 4) // 2 = 1) at columns 0-3, each channel in its own plane; a
    (2, 2) slice of one contrast lands at rows and columns 1-2 of its one plane."""
    first = np.arange(12, dtype=np.float32).reshape(2, 6)  # [[0 .. 5], [6 .. 11]]
    out = square_slices([np.stack([first, first + 100])], 4)
    assert out.shape == (1, 2, 4, 4)
    np.testing.assert_array_equal(out[0, 0], [[0, 0, 0, 0], [1, 2, 3, 4], [7, 8, 9, 10], [0, 0, 0, 0]])
    np.testing.assert_array_equal(
        out[0, 1], [[0, 0, 0, 0], [101, 102, 103, 104], [107, 108, 109, 110], [0, 0, 0, 0]]
    )
    one = square_slices([np.array([[1, 2], [3, 4]], np.float32)], 4)
    np.testing.assert_array_equal(one, [[[[0, 0, 0, 0], [0, 1, 2, 0], [0, 3, 4, 0], [0, 0, 0, 0]]]])


@pytest.fixture(scope="module")
def patients(tmp_path_factory):
    return two_contrast_patients(tmp_path_factory.mktemp("berdiff") / "patients")


@pytest.fixture(scope="module")
def model(patients):
    """Two patients trained, P2 held out (quality gates, healthy-score quantiles)."""
    out = patients.parent / "model"
    argv = ["train", str(patients), *TWO, *FAST, "--val-count", "1", "--out", str(out)]
    assert main(argv) == 0
    return out


def test_the_checkpoint_names_both_contrasts_in_channel_order(model, capsys):
    meta = json.loads((model / "berdiff.json").read_text())
    assert meta["contrasts"] == ["flair", "t2"] and meta["training"]["contrasts"] == ["flair", "t2"]
    assert meta["autoencoder"]["in_channels"] == 2
    record = meta["training"]
    assert record["training_scans"] == ["P0", "P1"] and record["validation_scans"] == ["P2"]
    assert record["quality_gates"]["held_out_slices"] > 0  # P2's (2, H, W) slices
    assert set(meta["healthy_score_quantiles"]) >= {"0.5", "0.999"}  # P2's combined map
    loaded = load_checkpoint(model)
    assert loaded.autoencoder.state_dict()["encoder.blocks.0.weight"].shape[1] == 2
    assert contrasts_of(loaded) == read_contrasts(model) == ("flair", "t2")
    assert main(["info", str(model)]) == 0
    assert "in channel order: --scan flair=PATH --scan t2=PATH" in capsys.readouterr().out


def test_detect_takes_one_scan_per_contrast_and_writes_a_map_on_the_scans_grid(
    tmp_path, model, patients, capsys
):
    flair, t2 = patients / "P2" / "flair.nii.gz", patients / "P2" / "t2.nii.gz"
    out = tmp_path / "map.nii.gz"
    argv = [
        "detect",
        "--scan",
        f"flair={flair}",
        "--scan",
        f"t2={t2}",
        "-c",
        str(model),
        "--out-map",
        str(out),
    ]
    assert main([*argv, "-q"]) == 0
    written, scan = nib.load(out), nib.load(flair)
    assert written.shape == scan.shape == (64, 72, 12)
    np.testing.assert_array_equal(written.affine, scan.affine)
    assert np.isfinite(written.get_fdata()).all() and written.get_fdata().max() > 0
    missing = tmp_path / "missing.nii.gz"
    assert main(["detect", "--scan", f"flair={flair}", "-c", str(model), "--out-map", str(missing)]) == 2
    assert "--scan flair=PATH --scan t2=PATH" in capsys.readouterr().err and not missing.exists()


def test_resume_with_other_contrasts_is_refused(model, patients, capsys):
    swapped = ["--scan-name", "t2=t2.nii.gz", "--scan-name", "flair=flair.nii.gz"]
    argv = ["train", str(patients), *swapped, *FAST, "--val-count", "1", "--out", str(model), "--resume"]
    assert main(argv) == 2
    assert "other settings than the run it continues (contrasts)" in capsys.readouterr().err


def test_contrast_names_in_the_training_record_of_older_imports_still_name_the_channels(tmp_path, model):
    """Imports written before the ``contrasts`` field kept the names in ``training``; a field naming
    another number of contrasts than the autoencoder's channels is refused."""
    copy = shutil.copytree(model, tmp_path / "copy")
    meta = json.loads((copy / "berdiff.json").read_text())
    (copy / "berdiff.json").write_text(
        json.dumps({**meta, "contrasts": [], "training": {"contrasts": ["a", "b"]}})
    )
    assert contrasts_of(load_checkpoint(copy)) == read_contrasts(copy) == ("a", "b")
    (copy / "berdiff.json").write_text(json.dumps({**meta, "contrasts": ["flair", "t2", "t1"]}))
    with pytest.raises(CheckpointError, match="names the contrasts"):
        load_checkpoint(copy)
    with pytest.raises(CheckpointError, match="names the contrasts"):
        read_contrasts(copy)
