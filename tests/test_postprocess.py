"""Map post-processing (brain-mask erosion, 3D median filter) against hand-computed arrays, and its
default recorded in a checkpoint's metadata."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_disyre.cli import main
from napari_disyre.detection.postprocess import MapPostprocessing, record_postprocessing
from napari_disyre.errors import InputError


def _cube_brain() -> np.ndarray:
    brain = np.zeros((7, 7, 7), bool)
    brain[1:6, 1:6, 1:6] = True  # a 5-voxel cube, one voxel from the array's border
    return brain


def test_erosion_zeroes_the_map_near_the_brain_edge():
    brain = _cube_brain()
    anomaly = np.where(brain, 2.0, 0.0).astype(np.float32)
    one = MapPostprocessing(erosion=1).apply(anomaly, brain)
    expected = np.zeros_like(anomaly)
    expected[2:5, 2:5, 2:5] = 2.0  # the cube without its outer layer
    np.testing.assert_array_equal(one, expected)
    assert one.dtype == np.float32
    two = MapPostprocessing(erosion=2).apply(anomaly, brain)
    expected = np.zeros_like(anomaly)
    expected[3, 3, 3] = 2.0  # only the centre is 2 face-steps from the outside
    np.testing.assert_array_equal(two, expected)
    np.testing.assert_array_equal(anomaly, np.where(brain, 2.0, 0.0))  # the input is untouched


def test_erosion_counts_the_array_border_as_outside():
    brain = np.ones((3, 3, 3), bool)
    out = MapPostprocessing(erosion=1).apply(np.ones((3, 3, 3), np.float32), brain)
    expected = np.zeros((3, 3, 3), np.float32)
    expected[1, 1, 1] = 1.0
    np.testing.assert_array_equal(out, expected)


def test_median_removes_a_speck_and_rounds_a_block():
    brain = np.ones((9, 9, 9), bool)
    speck = np.zeros((9, 9, 9), np.float32)
    speck[4, 4, 4] = 5.0
    np.testing.assert_array_equal(MapPostprocessing(median=3).apply(speck, brain), np.zeros_like(speck))
    block = np.zeros((9, 9, 9), np.float32)
    block[3:6, 3:6, 3:6] = 1.0
    # in a 3x3x3 window: the centre sees 27 ones, a face centre 18, an edge 12, a corner 8 (of 27)
    expected = np.zeros_like(block)
    expected[4, 4, 4] = 1.0
    for axis in range(3):
        for offset in (-1, 1):
            index = [4, 4, 4]
            index[axis] += offset
            expected[tuple(index)] = 1.0
    np.testing.assert_array_equal(MapPostprocessing(median=3).apply(block, brain), expected)


def test_median_then_erosion_and_off_is_the_identity():
    brain = _cube_brain()
    anomaly = np.where(brain, 1.0, 0.0).astype(np.float32)
    anomaly[3, 3, 3] = 9.0  # a speck inside the eroded brain: the median removes it
    both = MapPostprocessing(erosion=1, median=3).apply(anomaly, brain)
    expected = np.zeros_like(anomaly)
    expected[2:5, 2:5, 2:5] = 1.0
    np.testing.assert_array_equal(both, expected)
    off = MapPostprocessing()
    assert not off.enabled and off.describe() == "none"
    assert off.apply(anomaly, brain) is anomaly
    assert MapPostprocessing(median=1).enabled is False  # a 1-voxel window changes nothing


@pytest.mark.parametrize("bad", [{"erosion": -1}, {"median": -3}, {"erosion": 1.5}, {"median": True}])
def test_bad_values_are_refused(bad):
    with pytest.raises(InputError, match=r"map post-processing: (erosion|median) .*(whole number|greater than or equal to 0)"):
        MapPostprocessing(**bad)


def test_checkpoint_default_is_recorded_and_overridden(tmp_path, tiny_checkpoint, capsys):
    from napari_disyre import load_checkpoint
    from napari_disyre.disyre.checkpoint import read_checkpoint_info, save_checkpoint

    folder = save_checkpoint(tmp_path / "ckpt", tiny_checkpoint.with_info(description="kept"))
    assert MapPostprocessing.for_checkpoint(load_checkpoint(folder).info) == MapPostprocessing()
    record_postprocessing(folder, MapPostprocessing(erosion=3, median=5))
    info = load_checkpoint(folder).info
    assert info.postprocessing == {"erosion": 3, "median": 5} and info.description == "kept"
    assert json.loads((folder / "disyre.json").read_text())["postprocessing"] == {"erosion": 3, "median": 5}
    assert MapPostprocessing.for_checkpoint(info) == MapPostprocessing(3, 5)
    assert MapPostprocessing.for_checkpoint(info, median=0) == MapPostprocessing(3, 0)
    assert read_checkpoint_info(folder).postprocessing == {"erosion": 3, "median": 5}  # torch-free reader
    assert main(["info", str(folder)]) == 0
    assert "map post-processing: brain mask eroded by 3 voxel(s), 5-voxel median filter" in (
        capsys.readouterr().out.splitlines()
    )
    with pytest.raises(InputError, match="no disyre.json"):
        record_postprocessing(tmp_path, MapPostprocessing(1, 0))


def test_cli_detect_erodes_and_filters_the_saved_map(tmp_path, nifti_scan, tiny_checkpoint):
    from napari_disyre.disyre.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "ckpt", tiny_checkpoint)
    base = ["detect", str(nifti_scan), "-c", str(checkpoint), "--steps", "1", "--device", "cpu", "-q"]
    raw, post = tmp_path / "raw.nii.gz", tmp_path / "post.nii.gz"
    assert main([*base, "--out-map", str(raw)]) == 0
    assert main([*base, "--out-map", str(post), "--erode", "2", "--median", "3"]) == 0
    raw_map = np.asarray(nib.load(raw).dataobj)
    brain = np.asarray(nib.load(nifti_scan).dataobj) != 0  # the synthetic scan's zero background
    expected = MapPostprocessing(erosion=2, median=3).apply(raw_map, brain)
    np.testing.assert_allclose(np.asarray(nib.load(post).dataobj), expected, atol=1e-6)
    assert not np.array_equal(expected, raw_map)
