"""NIfTI input and output: outputs line up with the scan; bad files give clear errors and no output."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from napari_disyre.errors import InputError, OutputError, OutputExistsError
from napari_disyre.scans.nifti import load_matching, load_scan, save_volume

from .conftest import oblique_affine, synthetic_brain


def _write(path, data, affine=None, header_class=nib.Nifti1Image):
    image = header_class(data, np.eye(4) if affine is None else affine)
    nib.save(image, path)
    return path


def test_oblique_anisotropic_round_trip(tmp_path):
    data, _ = synthetic_brain()
    affine = oblique_affine()
    source = nib.Nifti1Image(data, affine)
    source.set_qform(affine, code=1)
    source.set_sform(affine, code=2)
    nib.save(source, tmp_path / "scan.nii.gz")
    scan = load_scan(tmp_path / "scan.nii.gz")
    np.testing.assert_allclose(scan.affine, affine, atol=1e-6)
    assert scan.spacing == pytest.approx((0.9, 1.1, 2.5))

    anomaly = np.random.default_rng(0).random(scan.shape).astype(np.float32)
    save_volume(tmp_path / "map.nii.gz", anomaly, scan, kind="map")
    save_volume(tmp_path / "mask.nii.gz", anomaly > 0.5, scan, kind="mask")
    written_map = nib.load(tmp_path / "map.nii.gz")
    written_mask = nib.load(tmp_path / "mask.nii.gz")
    for image in (written_map, written_mask):
        assert image.shape == scan.shape
        np.testing.assert_allclose(image.affine, affine, atol=1e-6)
        assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 2
    assert written_map.get_data_dtype() == np.float32
    assert written_mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(written_map.dataobj), anomaly)
    np.testing.assert_array_equal(np.asarray(written_mask.dataobj), (anomaly > 0.5).astype(np.uint8))
    # voxel alignment: the same world point hits the same voxel index in scan and outputs
    world = affine @ np.array([10, 20, 5, 1.0])
    np.testing.assert_allclose(np.linalg.inv(written_mask.affine) @ world, [10, 20, 5, 1], atol=1e-6)


def test_single_frame_4d_is_accepted(tmp_path):
    data, _ = synthetic_brain()
    path = _write(tmp_path / "scan4d.nii.gz", data[..., None])
    assert load_scan(path).shape == data.shape


def test_nifti2_output_keeps_nifti2(tmp_path):
    data, _ = synthetic_brain()
    scan = load_scan(_write(tmp_path / "s.nii", data, oblique_affine(), nib.Nifti2Image))
    save_volume(tmp_path / "m.nii", data, scan)
    assert isinstance(nib.load(tmp_path / "m.nii"), nib.Nifti2Image)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d, p: (p.write_text("not an image"), p)[1], "cannot be read as NIfTI"),
        (
            lambda d, p: (p.with_suffix(".png").write_bytes(b"\x89PNG"), p.with_suffix(".png"))[1],
            "must be a NIfTI file",
        ),
        (lambda d, p: _write(p, np.stack([d, d], axis=-1)), "4D with 2 volumes"),
        (lambda d, p: _write(p, np.zeros_like(d)), "every voxel of this scan has the value 0"),
        (lambda d, p: _write(p, np.where(d > 350, np.nan, d)), "NaN or infinite voxels"),
        (lambda d, p: _write(p, d[:, :, 0]), "2D images and single slices cannot be analysed"),
    ],
    ids=["garbage", "png", "4d", "all-zero", "nan", "2d"],
)
def test_bad_scans_give_clear_errors(tmp_path, make, message):
    data, _ = synthetic_brain()
    path = make(data, tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match=message) as error:
        load_scan(path)
    assert str(path) in str(error.value)


def test_truncated_gzip_is_reported_as_truncated(tmp_path):
    data, _ = synthetic_brain()
    path = _write(tmp_path / "scan.nii.gz", data)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated or corrupt|cannot be read"):
        load_scan(path)
    # and gzip itself agrees the file is broken (the test is about a real truncation)
    with pytest.raises((EOFError, OSError)), gzip.open(path) as handle:
        handle.read()


def test_outputs_are_never_overwritten_silently(tmp_path):
    data, _ = synthetic_brain()
    scan = load_scan(_write(tmp_path / "scan.nii.gz", data, oblique_affine()))
    target = tmp_path / "map.nii.gz"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        save_volume(target, data, scan)
    assert target.read_bytes() == b"precious"
    save_volume(target, data, scan, overwrite=True)
    assert nib.load(target).shape == data.shape
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    data, _ = synthetic_brain()
    scan = load_scan(_write(tmp_path / "scan.nii.gz", data))

    def failing_save(image, path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OutputError, match="map.nii.gz: could not be written \\(disk full\\)"):
        save_volume(tmp_path / "map.nii.gz", data, scan)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_masks_must_share_the_scan_grid(tmp_path):
    data, lesion = synthetic_brain()
    scan = load_scan(_write(tmp_path / "scan.nii.gz", data, oblique_affine()))
    shifted = oblique_affine()
    shifted[:3, 3] += 5
    _write(tmp_path / "wrong_affine.nii.gz", lesion.astype(np.uint8), shifted)
    _write(tmp_path / "wrong_shape.nii.gz", lesion[:-1].astype(np.uint8), oblique_affine())
    with pytest.raises(InputError, match="affine differs"):
        load_matching(tmp_path / "wrong_affine.nii.gz", scan, what="label")
    with pytest.raises(InputError, match=r"shape \(39, 44, 12\) but the scan"):
        load_matching(tmp_path / "wrong_shape.nii.gz", scan, what="label")
