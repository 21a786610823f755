"""Issue 27, class 2 (silently wrong results): scans pair with labels by exact stem or stem plus a
documented suffix only; a label covering every voxel, a NaN or infinite threshold, an unknown or
duplicate pairs-CSV column and a case id that is ``pooled`` or a path are refused. Each case: the
issue's probe and a fresh variant."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_disyre.cli import main
from napari_disyre.detection.postprocess import threshold_mask
from napari_disyre.errors import InputError
from napari_disyre.evaluation.cases import Case, cases_by_name, cases_from_csv

from .conftest import synthetic_brain


def _save(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


def _cohort(root: Path, scans: list[str], labels: list[str]) -> tuple[Path, Path]:
    for name in scans:
        _save(root / "scans" / f"{name}.nii.gz", synthetic_brain()[0])
    for name in labels:
        _save(root / "labels" / f"{name}.nii.gz", synthetic_brain()[1].astype(np.uint8))
    return root / "scans", root / "labels"


def test_a_scan_never_takes_the_label_of_a_scan_whose_name_extends_its_own(tmp_path):
    """The issue's probe: case1 and case10 with only case10's label scored case1 against it."""
    scans, labels = _cohort(tmp_path, ["case1", "case10"], ["case10"])
    with pytest.raises(InputError, match=r"1 scan\(s\) .* no label of the same name .*: case1\.nii\.gz \(for "):
        cases_by_name(scans, labels)


def test_documented_suffixes_pair_and_two_candidates_are_named(tmp_path):
    scans, labels = _cohort(tmp_path, ["sub-1", "sub-2", "sub-20"], ["sub-1_seg", "sub-2_lesion", "sub-20"])
    cases = cases_by_name(scans, labels)
    assert [(c.id, c.label.name) for c in cases] == [
        ("sub-1", "sub-1_seg.nii.gz"),
        ("sub-2", "sub-2_lesion.nii.gz"),
        ("sub-20", "sub-20.nii.gz"),
    ]
    _save(labels / "sub-1.nii.gz", synthetic_brain()[1].astype(np.uint8))  # fresh variant: two candidates
    with pytest.raises(InputError, match=r"two labels are named like this scan \(.*sub-1\.nii\.gz and .*sub-1_seg"):
        cases_by_name(scans, labels)


def test_a_label_covering_every_voxel_is_refused_like_an_empty_one(tmp_path, capsys):
    """The issue's probe (a label of all ones) and a fresh variant (the brain mask given as label)."""
    from napari_disyre.evaluation.scoring import load_case

    data, _ = synthetic_brain()
    scan = _save(tmp_path / "s.nii.gz", data)
    everything = _save(tmp_path / "ones.nii.gz", np.ones(data.shape, np.uint8))
    brain = _save(tmp_path / "brain.nii.gz", (data > 0).astype(np.uint8))
    for label in (everything, brain):
        with pytest.raises(InputError, match=r"marks every one of the \d+ counted voxels as anomalous"):
            load_case(Case("s", scan, label))
    assert main(["evaluate", "--pairs", str(_pairs(tmp_path, "scan,label\ns.nii.gz,ones.nii.gz")),
                 "--baselines", "intensity", "-q"]) == 2  # fmt: skip
    assert "Is it the brain mask?" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_a_non_finite_threshold_is_refused_before_any_scan(tmp_path, capsys, value):
    scans, labels = _cohort(tmp_path, ["a"], ["a"])
    argv = ["evaluate", "--scans", str(scans), "--labels", str(labels), f"--threshold={value}", "-q"]
    assert main(argv) == 2
    assert "argument --threshold: value" in capsys.readouterr().err
    scan = str(scans / "a.nii.gz")
    assert main(["detect", scan, "--out-map", str(tmp_path / "m.nii.gz"), f"--threshold={value}"]) == 2
    assert "must be a finite number" in capsys.readouterr().err and not (tmp_path / "m.nii.gz").exists()
    with pytest.raises(InputError, match="threshold_mask: threshold nan: must be a finite number"):
        threshold_mask(np.zeros((2, 2, 2), np.float32), float("nan"))


def _pairs(folder: Path, text: str) -> Path:
    path = folder / "pairs.csv"
    path.write_text(text + "\n")
    return path


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("scan,label,brainmask", r"unknown column 'brainmask' \(did you mean 'brain_mask'\?\)"),  # the issue's
        ("scan,label,label", r"names the column 'label' twice"),
        ("scan,label,Id", r"unknown column 'Id' \(did you mean 'id'\?\)"),  # fresh variant
    ],
)
def test_unknown_or_duplicate_pairs_columns_are_refused(tmp_path, header, message):
    _cohort(tmp_path, ["a"], ["a"])
    row = ",".join(["scans/a.nii.gz", "labels/a.nii.gz", "labels/a.nii.gz"])
    with pytest.raises(InputError, match=message):
        cases_from_csv(_pairs(tmp_path, f"{header}\n{row}"))


@pytest.mark.parametrize("case_id", ["pooled", "../../x", "a/b", "..", "a\\b"])
def test_case_ids_that_collide_with_pooled_or_name_a_path_are_refused(tmp_path, case_id):
    _cohort(tmp_path, ["a"], ["a"])
    with pytest.raises(InputError, match="case id"):
        cases_from_csv(_pairs(tmp_path, f'scan,label,id\nscans/a.nii.gz,labels/a.nii.gz,"{case_id}"'))
    if case_id == "pooled":  # a scan named pooled.nii.gz, paired by name, collides the same way
        scans, labels = _cohort(tmp_path / "named", ["pooled"], ["pooled"])
        with pytest.raises(InputError, match="'pooled' names the report's row"):
            cases_by_name(scans, labels)
