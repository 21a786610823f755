"""Several contrasts as one input: the engine's per-channel maps and their combination, checkpoint
metadata, the grid check and detection through the pipeline."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_disyre.detection.detectors import contrasts_of, load_checkpoint
from napari_disyre.detection.pipeline import detect
from napari_disyre.disyre.checkpoint import save_checkpoint
from napari_disyre.disyre.engine import RestorationSettings, restore
from napari_disyre.disyre.schedule import Schedule
from napari_disyre.errors import CheckpointError, InputError
from napari_disyre.restoration import run_to_end
from napari_disyre.scans.contrasts import MultiContrastScan, load_contrasts
from napari_disyre.scans.nifti import Volume

from .conftest import make_unet, synthetic_brain, two_channel_checkpoint, two_contrasts


def zero_output_unet(channels: int):
    """A UNet of ``channels`` channels whose last layer is zero: it predicts x0 = 0 everywhere."""
    unet = make_unet(in_channels=channels, out_channels=channels)
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.zero_()
    return unet


@pytest.mark.parametrize("method", ["mean-single-step", "multi-step-restoration"])
def test_channel_maps_and_their_mean_equal_the_hand_computed_scores(method):
    """One 32 x 32 window, a network predicting x0 = 0. mean-single-step: each of the S steps scores
    |x - 0| / S, so channel c's map is x_c times the window's foreground fraction f (non-zero values
    over both channels: here 32*29 + 32*16 of 2*32*32). multi-step: the first step scores |x| / S and
    sets x to 0, later steps score 0 and the final x is 0, so every map is 0. The combined map is the
    mean of the two channel maps."""
    x = np.zeros((1, 2, 32, 32), np.float32)
    x[0, 0, :, 3:] = np.linspace(0.1, 0.9, 29, dtype=np.float32)  # channel 0: 29 non-zero columns
    x[0, 1, :, :16] = 0.5  # channel 1: 16 non-zero columns
    settings = RestorationSettings(steps=4, method=method)
    result = run_to_end(restore(x, zero_output_unet(2), Schedule(), settings))
    f = (32 * 29 + 32 * 16) / (2 * 32 * 32)
    expected = x[0] * f if method == "mean-single-step" else np.zeros_like(x[0])
    assert result.channel_maps.shape == (1, 2, 32, 32)
    np.testing.assert_allclose(result.channel_maps[0], expected, atol=1e-6)
    np.testing.assert_allclose(result.anomaly_map[0], (expected[0] + expected[1]) / 2, atol=1e-6)
    assert result.final.shape == (1, 2, 32, 32)


def test_a_stack_without_the_networks_channels_is_refused():
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        run_to_end(restore(np.zeros((3, 32, 32), np.float32), make_unet(in_channels=2, out_channels=2), Schedule()))


def test_contrasts_are_recorded_in_order_and_read_back(tmp_path):
    folder = save_checkpoint(tmp_path / "model", two_channel_checkpoint())
    assert json.loads((folder / "disyre.json").read_text())["contrasts"] == ["flair", "t2"]
    loaded = load_checkpoint(folder)
    assert contrasts_of(loaded) == ("flair", "t2")
    assert "flair + t2" in loaded.summary()


def test_one_channel_metadata_is_unchanged(tmp_path, tiny_checkpoint):
    """No ``contrasts`` key for one channel: old and new one-channel checkpoints read and hash alike."""
    folder = save_checkpoint(tmp_path / "model", tiny_checkpoint.with_info(contrast="t1"))
    assert "contrasts" not in json.loads((folder / "disyre.json").read_text())
    assert contrasts_of(load_checkpoint(folder)) == ("t1",)


def test_metadata_naming_the_wrong_number_of_contrasts_is_refused(tmp_path):
    folder = save_checkpoint(tmp_path / "model", two_channel_checkpoint())
    info = json.loads((folder / "disyre.json").read_text())
    (folder / "disyre.json").write_text(json.dumps({**info, "contrasts": ["flair", "t1", "t2"]}))
    with pytest.raises(CheckpointError, match=r"\['flair', 't1', 't2'\].*2 input channel"):
        load_checkpoint(folder)


def test_scans_on_different_grids_are_refused_naming_both_files(tmp_path):
    paths, _ = two_contrasts(tmp_path, shift=(0.5, 0.0, 0.0))
    with pytest.raises(InputError, match="case_t2.nii.gz.*case_flair.nii.gz.*different affines"):
        load_contrasts(paths)


def test_scans_of_different_shapes_are_refused(tmp_path):
    paths, _ = two_contrasts(tmp_path)
    data = synthetic_brain((40, 44, 11))[0]
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), paths["t2"])
    with pytest.raises(InputError, match=r"different shapes, \(40, 44, 11\) and \(40, 44, 12\)"):
        load_contrasts(paths)


def test_detection_keeps_a_map_per_contrast_and_their_mean(tmp_path):
    """Given in the wrong order, the scans are put in the checkpoint's; the combined map is the mean
    of the per-contrast maps on the scan grid; the outputs lie on the first contrast's grid."""
    paths, _ = two_contrasts(tmp_path)
    scans = load_contrasts({"T2": paths["t2"], "FLAIR": paths["flair"]})
    result = detect(scans, two_channel_checkpoint(), RestorationSettings(steps=2))
    assert list(result.channel_maps) == ["flair", "t2"]
    assert result.scan.path == paths["flair"]
    flair_map, t2_map = result.channel_maps.values()
    assert flair_map.shape == t2_map.shape == (40, 44, 12)
    np.testing.assert_allclose(result.anomaly_map, (flair_map + t2_map) / 2, atol=1e-6)
    assert flair_map.max() > 0 and not np.allclose(flair_map, t2_map)
    assert (result.anomaly_map[~result.foreground] == 0).all()


def test_a_channel_map_equals_the_engine_on_that_contrast_alone(tmp_path):
    """Each contrast is scaled by its own percentiles: the stack handed to the engine holds, per
    channel, exactly what a one-channel detection of that scan would hand it."""
    from napari_disyre.scans.preprocessing import OFFICIAL_PREPROCESSING, prepare_contrasts, prepare_scan

    paths, _ = two_contrasts(tmp_path)
    scans = load_contrasts(paths)
    both = prepare_contrasts(scans.channels, scans.reference.affine, OFFICIAL_PREPROCESSING)
    for c, volume in enumerate(scans.volumes.values()):
        alone = prepare_scan(volume.data, volume.affine, OFFICIAL_PREPROCESSING)
        np.testing.assert_array_equal(both.image[c], alone.image)


def test_a_missing_contrast_or_a_single_scan_is_refused(tmp_path):
    paths, _ = two_contrasts(tmp_path)
    checkpoint = two_channel_checkpoint()
    with pytest.raises(InputError, match="missing: t2.*--scan flair=PATH --scan t2=PATH"):
        detect(load_contrasts({"flair": paths["flair"]}), checkpoint)
    flair = load_contrasts({"flair": paths["flair"]}).reference
    with pytest.raises(InputError, match="takes 2 contrasts"):
        detect(flair, checkpoint)


def test_one_channel_detection_of_a_volume_or_a_one_contrast_scan_is_the_same(tmp_path, tiny_checkpoint):
    paths, _ = two_contrasts(tmp_path)
    flair = load_contrasts({"flair": paths["flair"]})
    settings = RestorationSettings(steps=2)
    plain = detect(flair.reference, tiny_checkpoint, settings)
    wrapped = detect(MultiContrastScan(dict(flair.volumes)), tiny_checkpoint, settings)
    np.testing.assert_array_equal(plain.anomaly_map, wrapped.anomaly_map)
    assert plain.channel_maps == {} and isinstance(plain.scan, Volume)


def test_a_one_channel_stack_with_or_without_its_channel_axis_gives_the_same_maps():
    """(N, H, W) is the old contract; (N, 1, H, W) the new one: identical maps, bit for bit."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0.05, 1.0, (2, 40, 37)).astype(np.float32)
    x[:, :4] = 0
    settings = RestorationSettings(steps=2, method="multi-step-restoration")
    old = run_to_end(restore(x, make_unet(), Schedule(), settings, keep_step_maps=True))
    new = run_to_end(restore(x[:, None], make_unet(), Schedule(), settings, keep_step_maps=True))
    np.testing.assert_array_equal(old.anomaly_map, new.anomaly_map)
    np.testing.assert_array_equal(old.anomaly_map, new.channel_maps[:, 0])
    np.testing.assert_array_equal(old.final, new.final[:, 0])
    assert old.channel_maps is None and len(old.step_maps) == len(new.step_maps) == 2
