"""Evaluation: pairing scans with labels, baselines, pooled metrics and the report, against sklearn."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from napari_disyre.cli import main
from napari_disyre.errors import InputError
from napari_disyre.evaluation.cases import Case, cases_by_name, cases_from_csv, cases_in_folders
from napari_disyre.evaluation.scoring import (
    binarise_label,
    load_case,
    rank_combination,
    score_case,
    summarise,
)

from .conftest import oblique_affine, synthetic_brain


def _save(path, data, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), oblique_affine() if affine is None else affine), path)
    return path


@pytest.fixture
def cohort(tmp_path):
    """Two scans with lesions (one labelled with BraTS-like classes 1 and 2) and one healthy scan."""
    for seed, name in ((0, "a"), (1, "b"), (2, "healthy")):
        data, lesion = synthetic_brain(seed=seed, lesion=name != "healthy")
        label = lesion.astype(np.uint8)
        if name == "b":
            label[lesion & (np.arange(data.shape[0])[:, None, None] % 2 == 0)] = 2
        if name == "healthy":
            label[:] = 0
        _save(tmp_path / "scans" / f"{name}.nii.gz", data)
        _save(tmp_path / "labels" / f"{name}_seg.nii.gz", label)
    return tmp_path


def test_pairs_by_name_with_suffix(cohort):
    cases = cases_by_name(cohort / "scans", cohort / "labels")
    assert [(c.id, c.label.name) for c in cases] == [
        ("a", "a_seg.nii.gz"),
        ("b", "b_seg.nii.gz"),
        ("healthy", "healthy_seg.nii.gz"),
    ]


def test_scan_without_label_is_listed(cohort):
    (cohort / "labels" / "b_seg.nii.gz").unlink()
    with pytest.raises(InputError, match=r"1 scan\(s\).*b\.nii\.gz"):
        cases_by_name(cohort / "scans", cohort / "labels")


def test_label_on_another_grid_names_both_files(cohort):
    data, lesion = synthetic_brain(seed=0)
    _save(cohort / "labels" / "a_seg.nii.gz", lesion.astype(np.uint8), affine=np.eye(4))
    with pytest.raises(InputError, match="a_seg.nii.gz") as error:
        load_case(cases_by_name(cohort / "scans", cohort / "labels")[0])
    assert "a.nii.gz" in str(error.value)


def test_folder_and_csv_layouts(tmp_path, cohort):
    for name in ("p1", "p2"):
        data, lesion = synthetic_brain(seed=3)
        _save(tmp_path / "patients" / name / "T1.nii.gz", data)
        _save(tmp_path / "patients" / name / "GOLD.nii.gz", lesion.astype(np.uint8))
    cases = cases_in_folders(tmp_path / "patients", "T1.nii.gz", "GOLD.nii.gz")
    assert [c.id for c in cases] == ["p1", "p2"]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "scan,label\npatients/p1/T1.nii.gz,patients/p1/GOLD.nii.gz\npatients/p2/T1.nii.gz,patients/p2/GOLD.nii.gz\n"
    )
    assert cases_from_csv(pairs) == cases
    with pytest.raises(InputError, match="no label GOLD2"):
        cases_in_folders(tmp_path / "patients", "T1.nii.gz", "GOLD2.nii.gz")


def test_baseline_metrics_equal_sklearn_pooled_and_per_volume(cohort):
    scored = [score_case(load_case(c)) for c in cases_by_name(cohort / "scans", cohort / "labels")]
    (summary,) = summarise(scored)
    assert summary.name == "intensity"
    for item in scored[:2]:
        truth, score = item.label[item.region], item.scan.data[item.region]
        assert summary.per_volume[item.case.id].ap == pytest.approx(
            average_precision_score(truth, score), abs=1e-6
        )
        assert summary.per_volume[item.case.id].auroc == pytest.approx(roc_auc_score(truth, score), abs=1e-6)
    truth = np.concatenate([c.label[c.region] for c in scored])
    score = np.concatenate([c.scan.data[c.region] for c in scored])
    assert summary.pooled.ap == pytest.approx(average_precision_score(truth, score), abs=1e-6)
    assert summary.pooled.n_voxels == sum(int(c.region.sum()) for c in scored)  # healthy negatives count
    # class 2 voxels count as lesion: b's label is binarised
    assert summary.per_volume["b"].n_positive == int(scored[1].label.sum()) > 0
    # a healthy scan has no per-volume AP: undefined, not 0
    assert np.isnan(summary.per_volume["healthy"].ap)


def test_rank_combination_is_the_mean_of_ranks():
    region = np.array([True, True, True, False])
    combined = rank_combination(np.array([1.0, 3.0, 2.0, 9.0]), np.array([30.0, 10.0, 20.0, 0.0]), region)
    np.testing.assert_allclose(combined, [(1 + 3) / 6, (3 + 1) / 6, (2 + 2) / 6, 0.0])


@pytest.fixture
def tiny_checkpoint_dir(tmp_path, tiny_checkpoint):
    from napari_disyre.disyre.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path / "ckpt", tiny_checkpoint)


def test_cli_report_and_map_reuse(cohort, tiny_checkpoint_dir, monkeypatch, capsys):
    args = ["evaluate", "--checkpoint", str(tiny_checkpoint_dir), "--scans", str(cohort / "scans"),
            "--labels", str(cohort / "labels"), "--sweep", "1,2", "--maps", str(cohort / "maps"),
            "--device", "cpu", "-q"]  # fmt: skip
    assert main([*args, "--out", str(cohort / "report")]) == 0
    report = cohort / "report"
    rows = list(csv.DictReader((report / "metrics.csv").read_text().splitlines()))
    methods = ["intensity", "inverted-intensity", "DISYRE S=1", "DISYRE S=2"]
    assert [(r["method"], r["volume"]) for r in rows] == [
        (m, v) for m in methods for v in ("a", "b", "healthy", "pooled")
    ]
    result = json.loads((report / "metrics.json").read_text())
    assert result["per_volume"]["DISYRE S=1"]["healthy"]["ap"] is None  # undefined, written as null
    assert sorted(p.name for p in (cohort / "maps").iterdir()) == [
        f"{v}_S{s}_anomaly_map.{ext}"
        for v in ("a", "b", "healthy")
        for s in (1, 2)
        for ext in ("json", "nii.gz")
    ]  # each map with the record of what made it
    import matplotlib.image

    for plot in ("pr_curve.png", "dice_vs_threshold.png", "gallery.png"):
        image = matplotlib.image.imread(report / plot)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    # a second run reuses the saved maps: the model never runs, the figures are identical
    monkeypatch.setattr("napari_disyre.detection.pipeline.detect", lambda *a, **k: pytest.fail("model ran"))
    assert main([*args, "--out", str(cohort / "report2")]) == 0
    again = json.loads((cohort / "report2" / "metrics.json").read_text())
    assert again["pooled"]["DISYRE S=2"]["ap"] == result["pooled"]["DISYRE S=2"]["ap"]
    # and an existing report is refused before any work
    capsys.readouterr()
    assert main([*args, "--out", str(report)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_case_dataclass_is_hashable_for_dedup():
    assert len({Case("a", "x", "y"), Case("a", "x", "y")}) == 1


def test_bundled_model_finds_the_demo_lesion(tmp_path):
    """The shipped checkpoint on the shipped demo scan, S = 1, as `evaluate --demo` reports it.

    Measured when the checkpoint was bundled: AP 0.503, AUROC 0.970, best Dice 0.502; the scan's own
    intensity gives AP 0.008. The bounds guard against regressions in the engine or the resampling.
    """
    out = tmp_path / "report"
    assert main(["evaluate", "--demo", "--sweep", "1", "--baselines", "intensity", "--device", "cpu",
                 "-q", "--out", str(out)]) == 0  # fmt: skip
    pooled = json.loads((out / "metrics.json").read_text())["pooled"]
    disyre, intensity = pooled["DISYRE S=1"], pooled["intensity"]
    assert disyre["ap"] == pytest.approx(0.503, abs=0.01)
    assert disyre["auroc"] == pytest.approx(0.970, abs=0.005)
    assert disyre["ap"] > 20 * intensity["ap"]


def test_gallery_with_tied_slices_across_volumes(tmp_path, tiny_checkpoint_dir):
    """Two identical volumes give equal slice Dice values: the gallery must still rank them."""
    for name in ("p1", "p2"):
        data, lesion = synthetic_brain(seed=0)
        _save(tmp_path / "scans" / f"{name}.nii.gz", data)
        _save(tmp_path / "labels" / f"{name}.nii.gz", lesion.astype(np.uint8))
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint_dir), "--scans", str(tmp_path / "scans"),
                 "--labels", str(tmp_path / "labels"), "--sweep", "1", "--device", "cpu", "-q",
                 "--out", str(tmp_path / "report")]) == 0  # fmt: skip
    per_volume = json.loads((tmp_path / "report" / "metrics.json").read_text())["per_volume"]["DISYRE S=1"]
    assert per_volume["p1"]["ap"] == per_volume["p2"]["ap"]
    assert (tmp_path / "report" / "gallery.png").stat().st_size > 10_000


def test_label_values_select_part_of_a_multi_class_label(tmp_path, tiny_checkpoint_dir, capsys):
    """``--label-values 1,3,4`` counts the BraTS tumour core only; the oedema (2) becomes negative."""
    data, _ = synthetic_brain(seed=0)
    label = np.zeros(data.shape, np.uint8)
    label[10:12, 10:12, 5] = [[1, 2], [3, 4]]
    label[20, 20, 5] = 2
    assert binarise_label(label).sum() == 5
    core = binarise_label(label, [1, 3, 4])
    assert core.sum() == 3 and not core[20, 20, 5] and not core[10, 11, 5]
    _save(tmp_path / "scans" / "p.nii.gz", data)
    _save(tmp_path / "labels" / "p.nii.gz", label)
    assert (
        load_case(
            Case("p", tmp_path / "scans" / "p.nii.gz", tmp_path / "labels" / "p.nii.gz"), [1, 3, 4]
        ).label.sum()
        == 3
    )
    args = ["evaluate", "--checkpoint", str(tiny_checkpoint_dir), "--scans", str(tmp_path / "scans"),
            "--labels", str(tmp_path / "labels"), "--baselines", "intensity", "--sweep", "1",
            "--device", "cpu", "-q"]  # fmt: skip
    capsys.readouterr()
    assert main([*args, "--label-values", "1,3,4", "--out", str(tmp_path / "report")]) == 0
    assert "labels binarised (label in {1, 3, 4})" in capsys.readouterr().out
    result = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert result["pooled"]["intensity"]["n_positive"] == 3
    assert result["settings"]["anomalous_labels"] == "label in {1, 3, 4}"
    assert main([*args, "--label-values", "1,x"]) == 2
    assert "--label-values: takes comma-separated integers" in capsys.readouterr().err
    assert main([*args, "--label-values", "0"]) == 2
    assert "0 is background" in capsys.readouterr().err


def test_zscored_intensity_baseline_matches_a_hand_computed_ap(tmp_path):
    """Two volumes on different scales: z-scoring each inside its brain changes the pooled ranking.
    z(A) = [-1.342, -0.447, 0.447, 1.342], lesion at 1.342; z(B) = [-1.183, -0.507, 0.169, 1.521],
    lesion at -0.507. Pooled, descending: B 1.521, A+ 1.342, A 0.447, B 0.169, A -0.447, B+ -0.507:
    AP = (1/2 + 2/6) / 2 = 5/12. Raw values: B 50, 30, B+ 20, 10, A+ 4: AP = (1/3 + 2/5) / 2 = 11/30.
    (Each value fills a 2 x 2 column, so every voxel counts four times: the APs are unchanged.)"""
    cases = []
    for name, values, lesion in (("A", [1, 2, 3, 4, 0], 3), ("B", [10, 20, 30, 50, 0], 1)):
        label = np.zeros(5, np.uint8)
        label[lesion] = 1
        shaped = {k: np.broadcast_to(np.reshape(v, (5, 1, 1)), (5, 2, 2)) for k, v in
                  (("scan", np.asarray(values, np.float32)), ("label", label), ("mask", [1, 1, 1, 1, 0]))}  # fmt: skip
        paths = [
            _save(tmp_path / f"{name}_{k}.nii.gz", a.astype(np.float32), np.eye(4)) for k, a in shaped.items()
        ]
        cases.append(score_case(load_case(Case(name, *paths)), baselines=[
            "intensity", "intensity-zscore", "inverted-intensity-zscore"]))  # fmt: skip
    pooled = {s.name: s.pooled for s in summarise(cases)}
    assert pooled["intensity-zscore"].ap == pytest.approx(5 / 12)
    assert pooled["intensity"].ap == pytest.approx(11 / 30)
    assert pooled["inverted-intensity-zscore"].auroc == pytest.approx(1 - pooled["intensity-zscore"].auroc)
    # the z-score uses the brain voxels only (mean 2.5, population std sqrt(1.25)), unclipped
    np.testing.assert_allclose(
        cases[0].scores["intensity-zscore"][:4, 0, 0], (np.arange(1, 5) - 2.5) / np.sqrt(1.25), rtol=1e-6
    )


def test_cli_evaluate_post_processes_maps_and_records_it(cohort, tiny_checkpoint_dir, capsys):
    from napari_disyre.detection.postprocess import MapPostprocessing, record_postprocessing

    base = ["evaluate", "--checkpoint", str(tiny_checkpoint_dir), "--scans", str(cohort / "scans"),
            "--labels", str(cohort / "labels"), "--sweep", "1", "--maps", str(cohort / "maps"),
            "--baselines", "none", "--device", "cpu", "-q"]  # fmt: skip
    assert main([*base, "--out", str(cohort / "raw")]) == 0
    assert main([*base, "--out", str(cohort / "eroded"), "--erode", "2"]) == 0
    eroded = json.loads((cohort / "eroded" / "metrics.json").read_text())
    assert eroded["settings"]["postprocessing"] == {"erosion": 2, "median": 0}
    scored = [load_case(c) for c in cases_by_name(cohort / "scans", cohort / "labels")]
    maps = [
        np.asarray(nib.load(cohort / "maps" / f"{c.case.id}_S1_anomaly_map.nii.gz").dataobj) for c in scored
    ]
    truth = np.concatenate([c.label[c.region] for c in scored])
    expected = np.concatenate(
        [MapPostprocessing(erosion=2).apply(m, c.region)[c.region] for m, c in zip(maps, scored, strict=True)]
    )
    assert eroded["pooled"]["DISYRE S=1"]["ap"] == pytest.approx(
        average_precision_score(truth, expected), abs=1e-6
    )
    raw = json.loads((cohort / "raw" / "metrics.json").read_text())
    assert raw["settings"]["postprocessing"] == {"erosion": 0, "median": 0}
    assert raw["pooled"]["DISYRE S=1"]["ap"] != eroded["pooled"]["DISYRE S=1"]["ap"]
    # a checkpoint's recorded default applies unless overridden
    record_postprocessing(tiny_checkpoint_dir, MapPostprocessing(erosion=2))
    assert main([*base, "--out", str(cohort / "default")]) == 0
    default = json.loads((cohort / "default" / "metrics.json").read_text())
    assert default["pooled"]["DISYRE S=1"]["ap"] == eroded["pooled"]["DISYRE S=1"]["ap"]
    assert main([*base, "--out", str(cohort / "override"), "--erode", "0"]) == 0
    override = json.loads((cohort / "override" / "metrics.json").read_text())
    assert override["pooled"]["DISYRE S=1"]["ap"] == raw["pooled"]["DISYRE S=1"]["ap"]


def test_fast_mode_rows_are_named_fast(cohort, tiny_checkpoint_dir):
    """A fast-mode score is not an exact S = 1 score: the report says which it is."""
    args = ["evaluate", "--checkpoint", str(tiny_checkpoint_dir), "--scans", str(cohort / "scans"),
            "--labels", str(cohort / "labels"), "--fast", "--baselines", "", "--device", "cpu", "-q",
            "--out", str(cohort / "fast")]  # fmt: skip
    assert main(args) == 0
    pooled = json.loads((cohort / "fast" / "metrics.json").read_text())["pooled"]
    assert list(pooled) == ["DISYRE S=1 fast"]
