"""Timesteps as documented, model-grid resampling/reorientation, and `napari-disyre detect` outputs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_disyre.cli import main
from napari_disyre.detection.pipeline import default_settings, detect
from napari_disyre.disyre.checkpoint import save_checkpoint
from napari_disyre.disyre.schedule import Schedule
from napari_disyre.scans.grid import model_grid
from napari_disyre.scans.nifti import load_scan
from napari_disyre.scans.preprocessing import Preprocessing

from .conftest import oblique_affine, synthetic_brain


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (4, [99, 74, 49, 24]),
        (1, [99]),
        (2, [99, 49]),
        (5, [99, 79, 59, 39, 19]),
        (100, list(range(99, -1, -1))),
    ],
)
def test_trailing_timesteps_match_the_method_doc(steps, expected):
    # the doc: round(arange(T, 0, -T/S)) - 1
    assert Schedule().timesteps(steps, "exact").tolist() == expected
    assert np.round(np.arange(100, 0, -100 / steps)).astype(int).tolist() == [t + 1 for t in expected]


def test_betas_and_signal_levels_follow_the_documented_formula():
    schedule = Schedule()
    betas = np.linspace(1e-3, 0.2, 100)
    np.testing.assert_allclose(schedule.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(schedule.sqrt_alphas_cumprod, np.sqrt(np.cumprod(1 - betas)), rtol=1e-5)


def test_pure_reorientation_is_exact_both_ways():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    grid = model_grid(data.shape, las, spacing=None, orientation="RAS")
    model = grid.to_model(data)
    np.testing.assert_array_equal(model, data[::-1])
    np.testing.assert_array_equal(grid.to_source(model), data)
    assert "".join(nib.aff2axcodes(grid.affine)) == "RAS"


def test_las_087mm_input_gives_maps_on_its_grid_equal_to_the_pre_resampled_scan(tmp_path, tiny_checkpoint):
    """A 0.87 mm LAS scan gives its map on its own grid, equal (to interpolation error) to the map of
    the same scan resampled beforehand onto the checkpoint's 1 mm RAS grid, mapped back."""
    from nibabel.processing import resample_from_to

    data, _ = synthetic_brain(shape=(48, 52, 40), seed=4)
    shape = tuple(int(round(s / 0.87)) for s in data.shape)
    las = np.diag([-0.87, 0.87, 0.87, 1.0])
    las[0, 3] = data.shape[0] - 1.0  # x flipped over the same field of view
    las_image = resample_from_to(nib.Nifti1Image(data, np.eye(4)), (shape, las), order=1)
    nib.save(las_image, tmp_path / "las.nii.gz")
    checkpoint = tiny_checkpoint.with_info(
        preprocessing=Preprocessing(
            spacing=(1.0, 1.0, 1.0), orientation="RAS", percentile_region="foreground"
        )
    )
    settings = default_settings(checkpoint, steps=2)
    las_scan = load_scan(tmp_path / "las.nii.gz")
    las_map = detect(las_scan, checkpoint, settings, device="cpu").anomaly_map
    assert las_map.shape == shape
    # the same scan, resampled by the user beforehand onto the model grid
    grid = model_grid(las_scan.shape, las_scan.affine, (1.0, 1.0, 1.0), "RAS")
    assert "".join(nib.aff2axcodes(grid.affine)) == "RAS"
    nib.save(resample_from_to(las_image, (grid.shape, grid.affine), order=1), tmp_path / "ras.nii.gz")
    ras_map = detect(load_scan(tmp_path / "ras.nii.gz"), checkpoint, settings, device="cpu").anomaly_map
    back = np.asarray(resample_from_to(nib.Nifti1Image(ras_map, grid.affine), (shape, las), order=1).dataobj)
    brain = las_scan.data > 0
    # The engine resamples the scan and maps its output back by linear interpolation, while the user's
    # copy is interpolated at the input only: the two differ by interpolation error, which a random
    # network (maps far rougher than a trained one's) amplifies. Same maps up to that: strongly
    # correlated and within 10 % in the median.
    assert np.corrcoef(las_map[brain], back[brain])[0, 1] > 0.95
    assert np.median(np.abs(las_map[brain] - back[brain])) < 0.1 * np.median(back[brain])


def test_cli_detect_writes_map_and_mask_on_the_input_grid(tmp_path, nifti_scan, checkpoint_dir):
    out_map, out_mask = tmp_path / "map.nii.gz", tmp_path / "mask.nii.gz"
    args = ["detect", str(nifti_scan), "-c", str(checkpoint_dir), "--steps", "2", "--device", "cpu", "-q"]
    assert main([*args, "--out-map", str(out_map), "--out-mask", str(out_mask), "--threshold", "0.0"]) == 0
    source = nib.load(nifti_scan)
    for path, dtype in ((out_map, np.float32), (out_mask, np.uint8)):
        image = nib.load(path)
        assert image.shape == source.shape and image.get_data_dtype() == dtype
        np.testing.assert_allclose(image.affine, source.affine, atol=1e-6)
    scores = np.asarray(nib.load(out_map).dataobj)
    mask = np.asarray(nib.load(out_mask).dataobj)
    np.testing.assert_array_equal(mask > 0, scores > 0.0)


def test_cli_detect_refuses_to_overwrite_and_handles_a_cohort(tmp_path, nifti_scan, checkpoint_dir, capsys):
    out_map = tmp_path / "map.nii.gz"
    out_map.write_bytes(b"precious")
    base = ["detect", "-c", str(checkpoint_dir), "--steps", "1", "--device", "cpu", "-q"]
    assert main([*base, str(nifti_scan), "--out-map", str(out_map)]) == 2
    assert "already exists" in capsys.readouterr().err and out_map.read_bytes() == b"precious"
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for name, seed in (("s1", 1), ("s2", 2)):
        data, _ = synthetic_brain(seed=seed)
        nib.save(nib.Nifti1Image(data, oblique_affine()), cohort / f"{name}.nii.gz")
    assert main([*base, str(cohort), "--out-dir", str(tmp_path / "results")]) == 0
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        f"{s}_anomaly_{k}.nii.gz" for s in ("s1", "s2") for k in ("map", "mask")
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a nifti at all", "NIfTI"), (None, "every voxel")],
)
def test_cli_detect_bad_input_leaves_no_output(tmp_path, checkpoint_dir, capsys, content, message):
    bad = tmp_path / "bad.nii.gz"
    if content is None:
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), bad)
    else:
        bad.write_bytes(content)
    out = tmp_path / "out"
    assert main(["detect", str(bad), "-c", str(checkpoint_dir), "-q", "--out-dir", str(out)]) == 2
    error = capsys.readouterr().err
    assert str(bad) in error or bad.name in error
    assert message.lower() in error.lower()
    assert not out.exists() or not any(out.iterdir())


def test_cli_info_describes_the_checkpoint(tmp_path, tiny_checkpoint, capsys):
    quantiles = {"0.99": 0.125, "0.999": 0.25}
    described = tiny_checkpoint.with_info(
        steps=8,
        method="multi-step-restoration",
        contrast="T2",
        healthy_score_quantiles=quantiles,
        training={"preset": "small", "steps": 300, "batch_size": 16, "training_scans": ["a", "b", "c"],
                  "wall_time_s": 5400.0, "device": "cpu"},
    )  # fmt: skip
    path = save_checkpoint(tmp_path / "model", described)
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model: T2, ") and "scan's own grid (napari-disyre layout)" in lines[0]
    assert lines[1] == "method: DISYRE; defaults: S = 8, multi-step-restoration, foreground-weighted scores"
    assert lines[2] == "healthy-score quantiles: 0.99: 0.125, 0.999: 0.25"
    assert lines[3] == "trained: preset small, 300 steps of 16, 3 scans, 1.5 h on cpu"
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
