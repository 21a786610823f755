"""Training on several contrasts: one anomaly per sample in every channel, co-registered
augmentation, the widened starting network, and the command line from patient folders to detect."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_disyre.cli import main
from napari_disyre.detection.detectors import load_checkpoint
from napari_disyre.disyre.unet import with_channels
from napari_disyre.errors import CheckpointError
from napari_disyre.training.augment import AugmentationProbabilities, augment_slice
from napari_disyre.training.corruption import dag_corrupt

from .conftest import TINY, make_unet, synthetic_brain


def _two_channel_slice(seed=0):
    data, _ = synthetic_brain((96, 96, 3), seed=seed, lesion=False)
    first = np.clip(data[:, :, 1] / 500, 0, 1).astype(np.float32)
    second = np.where(first > 0, 1 - first * 0.8, 0).astype(np.float32)
    return np.stack([first, second])


def test_one_corruption_shape_in_every_channel_with_its_own_texture_and_bias():
    image = _two_channel_slice()
    foreign = _two_channel_slice(seed=1)
    corruption = dag_corrupt(np.random.default_rng(4), image, foreign, alpha=0.8)
    assert corruption.image.shape == corruption.mask.shape == (2, 96, 96)
    both = (image > 0).all(axis=0)
    np.testing.assert_array_equal(corruption.mask[0][both], corruption.mask[1][both])  # one shape
    changed = corruption.image != image
    assert changed[0].any() and changed[1].any()
    outside = corruption.mask == 0
    # the bias is smoothed (sigma 1) but only ever applied inside the shape: nothing changes outside
    assert not changed[outside].any()
    assert not np.allclose(corruption.image[0] - image[0], corruption.image[1] - image[1])
    assert 0 < corruption.level <= 1


def test_geometry_is_shared_by_the_channels_and_intensity_is_drawn_per_channel():
    image = _two_channel_slice()
    same = np.stack([image[0], image[0]])
    geometry_only = AugmentationProbabilities(**{**AugmentationProbabilities.constant(1.0).__dict__,
        "brightness": 0, "gamma": 0, "inverted_gamma": 0, "noise": 0, "blur": 0})  # fmt: skip
    out = augment_slice(np.random.default_rng(0), same, (64, 64), geometry_only)
    assert out.shape == (2, 64, 64)
    np.testing.assert_array_equal(out[0], out[1])
    noisy = augment_slice(np.random.default_rng(0), same, (64, 64), AugmentationProbabilities.constant(1.0))
    assert not np.array_equal(noisy[0], noisy[1])


def test_a_widened_network_answers_identical_channels_as_the_one_channel_network():
    """First layer repeated and divided by C, last layer repeated: C copies of a slice give C copies
    of the one-channel restoration."""
    narrow = make_unet(seed=2)
    wide = with_channels(narrow, 3, "test")
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 70])
    with torch.no_grad():
        expected = narrow(x, t).sample
        got = wide(x.repeat(1, 3, 1, 1), t).sample
    assert got.shape == (2, 3, 32, 32)
    for c in range(3):
        torch.testing.assert_close(got[:, c : c + 1], expected, atol=2e-5, rtol=0)
    with pytest.raises(CheckpointError, match="network of 3 channels cannot start one of 2"):
        with_channels(wide, 2, "test")


def test_train_from_patient_folders_then_detect_with_the_result(tmp_path, patients, monkeypatch):
    """The small preset's network is made tiny here; the command line is the user's."""
    import dataclasses

    from napari_disyre.training.presets import PRESETS

    small = PRESETS["small"]
    monkeypatch.setitem(PRESETS, "small", dataclasses.replace(small, unet={**small.unet, **TINY}))
    model = tmp_path / "model"
    argv = ["train", str(patients), "--scan-name", "flair=flair.nii.gz", "--scan-name", "t2=t2.nii.gz",
            "--out", str(model), "--steps", "3", "--batch-size", "2", "--crop", "64",
            "--val-count", "1", "--spacing", "2", "2", "2", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    info = json.loads((model / "disyre.json").read_text())
    assert info["contrasts"] == ["flair", "t2"]
    assert info["training"]["training_scans"] == ["P0", "P1"]
    assert set(info["healthy_score_quantiles"]) >= {"0.999"}
    checkpoint = load_checkpoint(model)
    assert checkpoint.unet.config.in_channels == checkpoint.unet.config.out_channels == 2
    out = tmp_path / "map.nii.gz"
    argv = ["detect", "--scan", f"flair={patients / 'P0' / 'flair.nii.gz'}", "--scan",
            f"t2={patients / 'P0' / 't2.nii.gz'}", "-c", str(model), "--steps", "1", "--out-map", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0
    combined = nib.load(out).get_fdata()
    per_contrast = [nib.load(tmp_path / f"map_{c}.nii.gz").get_fdata() for c in ("flair", "t2")]
    np.testing.assert_allclose(combined, (per_contrast[0] + per_contrast[1]) / 2, atol=1e-6)


def test_init_widens_the_one_channel_model_to_the_contrasts(tmp_path, patients):
    """--init of a one-channel checkpoint for two contrasts: with a learning rate of 0 the saved
    network is exactly the widened start (first layer / 2 per channel, last layer repeated)."""
    from napari_disyre.sample_data import demo_checkpoint_path

    model = tmp_path / "model"
    argv = ["train", str(patients), "--scan-name", "flair=flair.nii.gz", "--scan-name", "t2=t2.nii.gz",
            "--out", str(model), "--init", str(demo_checkpoint_path()), "--steps", "1", "--batch-size", "1",
            "--crop", "128", "--lr", "0", "--val-count", "0", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    start = load_checkpoint(demo_checkpoint_path()).unet.state_dict()
    tuned = load_checkpoint(model).unet.state_dict()
    torch.testing.assert_close(tuned["conv_in.weight"], start["conv_in.weight"].repeat(1, 2, 1, 1) / 2)
    torch.testing.assert_close(tuned["conv_out.weight"], start["conv_out.weight"].repeat(2, 1, 1, 1))
    torch.testing.assert_close(tuned["conv_out.bias"], start["conv_out.bias"].repeat(2))
    assert json.loads((model / "disyre.json").read_text())["contrasts"] == ["flair", "t2"]
