"""Several contrasts through the command line: detect (one case, a cohort by name patterns) and
evaluate (a pairs CSV with a column per contrast)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_disyre.cli import main
from napari_disyre.detection.detectors import load_checkpoint
from napari_disyre.detection.pipeline import detect
from napari_disyre.disyre.checkpoint import save_checkpoint
from napari_disyre.disyre.engine import RestorationSettings
from napari_disyre.scans.contrasts import load_contrasts

from .conftest import two_channel_checkpoint, two_contrasts


@pytest.fixture
def model(tmp_path):
    return save_checkpoint(tmp_path / "model", two_channel_checkpoint())


def test_detect_writes_the_combined_map_and_one_per_contrast(tmp_path, model):
    """The CLI's maps equal the library's: combined and per contrast, on the first contrast's grid."""
    paths, _ = two_contrasts(tmp_path)
    out = tmp_path / "out"
    argv = ["detect", "--scan", f"t2={paths['t2']}", "--scan", f"flair={paths['flair']}", "-c", str(model),
            "--steps", "2", "--out-map", str(out / "map.nii.gz"), "--out-mask", str(out / "mask.nii.gz"), "-q"]  # fmt: skip
    out.mkdir()
    assert main(argv) == 0
    expected = detect(load_contrasts(paths), load_checkpoint(model), RestorationSettings(steps=2))
    combined = nib.load(out / "map.nii.gz")
    np.testing.assert_allclose(combined.get_fdata(), expected.anomaly_map, atol=1e-6)
    np.testing.assert_allclose(combined.affine, nib.load(paths["t2"]).affine)
    for contrast in ("flair", "t2"):
        written = nib.load(out / f"map_{contrast}.nii.gz").get_fdata()
        np.testing.assert_allclose(written, expected.channel_maps[contrast], atol=1e-6)


def patient_folders(root: Path, file_name: str = "{contrast}.nii.gz") -> dict[str, np.ndarray]:
    """Patient folders P1 and P2 under ``root``: flair and t2 named by ``file_name`` (``{case}`` and
    ``{contrast}`` filled in) and the lesion label seg.nii.gz; the lesion masks by case."""
    lesions = {}
    for case in ("P1", "P2"):
        folder = root / case
        folder.mkdir(parents=True)
        paths, lesions[case] = two_contrasts(folder)
        for contrast, path in paths.items():
            path.rename(folder / file_name.format(case=case, contrast=contrast))
        label = nib.Nifti1Image(lesions[case].astype(np.uint8), nib.load(next(folder.iterdir())).affine)
        nib.save(label, folder / "seg.nii.gz")
    return lesions


def test_detect_a_cohort_by_name_patterns(tmp_path, model):
    patient_folders(tmp_path / "cohort", "{case}_{contrast}.nii.gz")
    out = tmp_path / "out"
    argv = ["detect", "--scans", str(tmp_path / "cohort"), "--scan-name", "flair=*_flair.nii.gz",
            "--scan-name", "t2=*_t2.nii.gz", "-c", str(model), "--steps", "1", "--out-dir", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"P{i}_anomaly_{what}.nii.gz" for i in (1, 2) for what in ("map", "mask", "map_flair", "map_t2")
    )


def test_detect_refuses_scans_on_different_grids_writing_nothing(tmp_path, model, capsys):
    paths, _ = two_contrasts(tmp_path, shift=(0.0, 2.0, 0.0))
    out = tmp_path / "map.nii.gz"
    argv = ["detect", "--scan", f"flair={paths['flair']}", "--scan", f"t2={paths['t2']}", "-c", str(model),
            "--out-map", str(out)]  # fmt: skip
    assert main(argv) == 2
    assert "different affines" in capsys.readouterr().err and not out.exists()


def test_detect_refuses_a_single_plain_scan_for_a_two_contrast_model(tmp_path, model, capsys):
    paths, _ = two_contrasts(tmp_path)
    assert (
        main(["detect", str(paths["flair"]), "-c", str(model), "--out-map", str(tmp_path / "m.nii.gz")]) == 2
    )
    assert "--scan flair=PATH --scan t2=PATH" in capsys.readouterr().err


def test_evaluate_a_pairs_csv_with_a_column_per_contrast(tmp_path, model):
    """AP of the two-contrast model from the CSV equals AP computed here from the library's map."""
    from napari_disyre.evaluation.metrics import voxel_metrics

    paths, lesion = two_contrasts(tmp_path)
    label = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(lesion.astype(np.uint8), nib.load(paths["flair"]).affine), label)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"id,flair,t2,label\ncase,{paths['flair'].name},{paths['t2'].name},label.nii.gz\n")
    report = tmp_path / "report"
    argv = ["evaluate", "--pairs", str(pairs), "-c", str(model), "--steps", "1", "--baselines", "intensity",
            "--out", str(report), "-q"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    expected = detect(load_contrasts(paths), load_checkpoint(model), RestorationSettings(steps=1))
    ap = voxel_metrics(expected.anomaly_map, lesion, expected.foreground).ap
    assert metrics["pooled"]["DISYRE S=1"]["ap"] == pytest.approx(ap, abs=1e-6)
    assert metrics["pooled"]["intensity"]["ap"] == pytest.approx(
        voxel_metrics(load_contrasts(paths).reference.data, lesion, expected.foreground).ap, abs=1e-9
    )  # the baselines score the first contrast


def test_info_names_the_contrasts_in_channel_order(model, capsys):
    assert main(["info", str(model)]) == 0
    assert "inputs: 2 contrasts, one scan each, in channel order: --scan flair=PATH --scan t2=PATH" in (
        capsys.readouterr().out
    )


def test_one_named_scan_for_a_one_contrast_model_is_a_plain_detection(tmp_path, checkpoint_one):
    """``--scan t1=PATH`` with a one-contrast checkpoint writes what the plain path writes."""
    paths, _ = two_contrasts(tmp_path)
    named, plain = tmp_path / "named.nii.gz", tmp_path / "plain.nii.gz"
    common = ["-c", str(checkpoint_one), "--steps", "1", "-q", "--out-restorations"]
    assert (
        main(
            [
                "detect",
                "--scan",
                f"t1={paths['flair']}",
                *common,
                str(tmp_path / "r1.nii.gz"),
                "--out-map",
                str(named),
            ]
        )
        == 0
    )
    assert (
        main(["detect", str(paths["flair"]), *common, str(tmp_path / "r2.nii.gz"), "--out-map", str(plain)])
        == 0
    )
    np.testing.assert_array_equal(nib.load(named).get_fdata(), nib.load(plain).get_fdata())
    assert sorted(p.name for p in tmp_path.glob("named*")) == ["named.nii.gz"]


@pytest.fixture
def checkpoint_one(tmp_path, tiny_checkpoint):
    return save_checkpoint(tmp_path / "one", tiny_checkpoint.with_info(contrast="t1"))


def test_evaluate_patient_folders_with_a_file_name_per_contrast_equals_the_pairs_csv(tmp_path, model):
    """``--scans DIR --scan-name flair=flair.nii.gz --scan-name t2=t2.nii.gz`` scores each patient's
    two contrasts together: the same pooled AP as the library's maps of both patients."""
    from napari_disyre.evaluation.metrics import voxel_metrics

    cohort = tmp_path / "cohort"
    lesions = patient_folders(cohort)
    report = tmp_path / "report"
    argv = ["evaluate", "--scans", str(cohort), "--scan-name", "flair=flair.nii.gz", "--scan-name", "t2=t2.nii.gz",
            "--label-name", "seg.nii.gz", "-c", str(model), "--steps", "1", "--baselines", "none",
            "--out", str(report), "-q"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    maps, labels, regions = [], [], []
    for case in ("P1", "P2"):
        paths = {c: cohort / case / f"{c}.nii.gz" for c in ("flair", "t2")}
        result = detect(load_contrasts(paths), load_checkpoint(model), RestorationSettings(steps=1))
        maps.append(result.anomaly_map[result.foreground])
        labels.append(lesions[case][result.foreground])
        regions.append(np.ones(int(result.foreground.sum()), bool))
    pooled = voxel_metrics(np.concatenate(maps), np.concatenate(labels), np.concatenate(regions)).ap
    assert metrics["pooled"]["DISYRE S=1"]["ap"] == pytest.approx(pooled, abs=1e-6)


def test_evaluate_refuses_a_patient_folder_missing_one_contrast(tmp_path, model, capsys):
    cohort = tmp_path / "cohort"
    patient_folders(cohort)
    (cohort / "P2" / "t2.nii.gz").unlink()
    out = tmp_path / "report"
    argv = ["evaluate", "--scans", str(cohort), "--scan-name", "flair=flair.nii.gz", "--scan-name", "t2=t2.nii.gz",
            "--label-name", "seg.nii.gz", "-c", str(model), "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "P2: no t2.nii.gz here, though other contrasts are" in err and not out.exists()
