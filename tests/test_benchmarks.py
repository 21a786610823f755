"""The BraTS benchmark's cross-validated pooling: each patient is scored by the fold model that
never saw it, so a wrong fold-to-maps pairing would silently report the wrong figure."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "brats_leave_patients_out.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("brats_leave_patients_out", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


@pytest.mark.parametrize("core", [False, True])
def test_pooled_over_folds_scores_each_patient_with_its_held_out_fold_map(tmp_path: Path, core: bool) -> None:
    script = _load_script()
    brats, work = tmp_path / "brats", tmp_path / "work"
    labels = np.zeros((4, 4, 2), np.uint8)
    labels[0, :, 0] = 2  # oedema: tumour, not core
    labels[1, :, 0] = 4  # enhancing: tumour and core
    brain = np.ones_like(labels)
    lesion = (labels == 4) if core else (labels > 0)
    for fold, (_, test_patients) in script.FOLDS.items():
        for patient in test_patients:
            scans = brats / script.folder(patient)
            _save(scans / script.LABEL, labels)
            _save(scans / script.MASK, brain)
            _save(scans / script.CONTRASTS["T1c"], np.where(lesion, 0.0, 1.0).astype(np.float32))  # inverted
            _save(work / f"maps_T1c_fold{fold}" / f"{script.folder(patient)}_S4_anomaly_map.nii.gz",
                  lesion.astype(np.float32))  # fmt: skip
    # the other fold's folder holds maps of the same names that would be wrong for these patients
    for fold, other in (("A", "B"), ("B", "A")):
        for patient in script.FOLDS[other][1]:
            _save(work / f"maps_T1c_fold{fold}" / f"{script.folder(patient)}_S4_anomaly_map.nii.gz",
                  (~lesion).astype(np.float32))  # fmt: skip
    args = argparse.Namespace(brats=brats, work=work, eval_steps=4)

    pooled = script.pooled_over_folds("T1c", args, core=core)

    assert pooled["DISYRE S=4"] == {"ap": 1.0, "best_dice": 1.0, "auroc": 1.0}
    positives = lesion.sum() / lesion.size  # inverted intensity ranks every lesion voxel last
    assert pooled["intensity"]["auroc"] == 0.0
    assert pooled["intensity"]["ap"] == pytest.approx(positives)


def test_folds_never_test_a_training_patient_and_test_each_patient_once() -> None:
    folds = _load_script().FOLDS
    for train_patients, test_patients in folds.values():
        assert not set(train_patients) & set(test_patients)
    tested = [patient for _, test_patients in folds.values() for patient in test_patients]
    assert sorted(tested) == ["pat0001", "pat0002", "pat0005", "pat0006"]
