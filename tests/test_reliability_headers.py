"""Issue 27, classes 5 and 6: headers taken on trust (voxel sizes, qform/sform, complex and RGB data) and
memory spent before a refusal (sizes a header claims, a model grid, size options). Each case: the
issue's probe and a fresh variant; tiny files throughout."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_disyre.cli import main
from napari_disyre.errors import InputError
from napari_disyre.scans.headers import HeaderWarning
from napari_disyre.scans.nifti import load_scan, save_volume

from .conftest import synthetic_brain


def _with_pixdim(path: Path, sizes) -> Path:
    data, _ = synthetic_brain()
    image = nib.Nifti1Image(data, None)
    image.header.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    image.header["pixdim"][1:4] = sizes  # as a broken converter writes them
    nib.save(image, path)
    return path


@pytest.mark.parametrize("sizes", [[1.0, 0.0, 1.0], [1.0, 1.0, -2.0], [np.nan, 1.0, 1.0], [1.0, np.inf, 1.0]])
def test_zero_negative_or_non_finite_voxel_sizes_are_refused(tmp_path, sizes):
    """The issue's probe (pixdim 0, read as 1 mm) and fresh variants (negative, NaN, infinite)."""
    with pytest.raises(InputError, match=r"voxel sizes \(pixdim\) of .*zero, negative or non-finite"):
        load_scan(_with_pixdim(tmp_path / "s.nii.gz", sizes))


def test_disagreeing_qform_and_sform_warn_naming_the_sform_and_outputs_keep_both(tmp_path):
    data, _ = synthetic_brain()
    qform, sform = np.diag([1.0, 1.0, 2.0, 1.0]), np.diag([1.0, 1.0, 2.0, 1.0])
    sform[:3, 3] = [10.0, -4.0, 0.0]
    image = nib.Nifti1Image(data, None)
    image.header.set_qform(qform, code=1)
    image.header.set_sform(sform, code=2)
    path = tmp_path / "s.nii.gz"
    nib.save(image, path)
    with pytest.warns(HeaderWarning, match=r"qform \(code 1\) and sform \(code 2\) .* the sform is used"):
        scan = load_scan(path)
    np.testing.assert_allclose(scan.affine, sform)
    out = nib.load(save_volume(tmp_path / "map.nii.gz", np.zeros(data.shape, np.float32), scan))
    np.testing.assert_allclose(out.header.get_qform(), qform)  # the scan's qform, not rewritten
    np.testing.assert_allclose(out.header.get_sform(), sform)
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
    with warnings.catch_warnings():  # agreeing forms: no word
        warnings.simplefilter("error")
        image.header.set_sform(qform, code=2)
        nib.save(image, tmp_path / "agree.nii.gz")
        load_scan(tmp_path / "agree.nii.gz")


@pytest.mark.parametrize(
    ("dtype", "message"),
    [(np.complex64, "complex voxels"), (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), "colour \\(RGB/RGBA\\)")],
)
def test_complex_and_rgb_scans_are_refused_with_the_real_reason(tmp_path, capsys, dtype, message):
    data = np.zeros((8, 8, 8), dtype)
    path = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    assert main(["detect", str(path), "--out-map", str(tmp_path / "m.nii.gz"), "-q"]) == 2
    err = capsys.readouterr().err
    assert message.replace("\\", "") in err and "truncated" not in err and not (tmp_path / "m.nii.gz").exists()


def _liar(path: Path, shape) -> Path:
    """A tiny file whose header claims ``shape`` (the issue's 4 KB file claiming 1200 x 1200 x 1000)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(shape)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    body = header.binaryblock + b"\0" * 4 + b"\0" * 4096
    path.write_bytes(gzip.compress(body) if path.name.endswith(".gz") else body)
    return path


@pytest.mark.parametrize("name", ["liar.nii", "liar.nii.gz"])
def test_a_header_claiming_more_voxels_than_the_file_holds_is_refused_before_allocation(tmp_path, monkeypatch, name):
    import napari_disyre.scans.nifti as nifti

    monkeypatch.setattr(nifti, "_read_data", lambda *a: pytest.fail("voxels allocated before the check"))
    with pytest.raises(InputError, match=r"claims 1200x1200x1000 voxels \(5493 MB\).* truncated or its header corrupt"):
        load_scan(_liar(tmp_path / name, (1200, 1200, 1000)))


def test_a_volume_beyond_the_memory_budget_is_refused_before_reading(tmp_path, monkeypatch):
    data, _ = synthetic_brain()
    path = tmp_path / "s.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    monkeypatch.setenv("NAPARI_DISYRE_MEMORY_BUDGET", str(data.nbytes))  # needs raw + float32: twice
    with pytest.raises(InputError, match=r"needs about 0\.0 GB of memory, more than the 0\.0 GB available"):
        load_scan(path)
    monkeypatch.setenv("NAPARI_DISYRE_MEMORY_BUDGET", str(3 * data.nbytes))
    assert load_scan(path).shape == data.shape


@pytest.mark.parametrize("voxel_mm", [100.0, 250.0])
def test_absurd_voxel_sizes_are_refused_before_the_model_grid_is_allocated(tmp_path, capsys, voxel_mm):
    """The issue's traceback on voxel sizes of 100 mm and more: a model grid of billions of voxels."""
    data, _ = synthetic_brain()
    path = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])), path)
    assert main(["detect", str(path), "--out-map", str(tmp_path / "m.nii.gz"), "--device", "cpu", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: the scan spans" in err and "far more than a brain needs" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--median", "1000"], "--median: value 1000: input should be less than or equal to 15"),  # the issue's
        (["--median", "13"], "--median 13 is larger than the volume allows (12 for a 40x44x12 volume)"),
        (["--erode", "7"], "--erosion 7 is larger than the volume allows (6"),
        (["--min-size", "100000"], "--min-size 100000 is larger than the volume allows (21120"),
    ],
)
def test_size_options_are_bounded_by_the_volume_before_the_model_runs(tmp_path, capsys, monkeypatch, option, message):
    data, _ = synthetic_brain()
    path = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 1.5, 1.0])), path)
    monkeypatch.setattr("napari_disyre.detection.pipeline.restore_stack", lambda *a, **k: pytest.fail("the model ran"))
    assert main(["detect", str(path), "--out-map", str(tmp_path / "m.nii.gz"), "--device", "cpu", "-q", *option]) == 2
    assert message in capsys.readouterr().err
