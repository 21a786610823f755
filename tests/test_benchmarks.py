"""The BraTS benchmark's cross-validated pooling: each patient is scored by the fold model that
never saw it, so a wrong fold-to-maps pairing would silently report the wrong figure."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
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


def _empty_brats(brats: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Twelve BraTS-named patient folders of empty 2^3 files, one per suffix; their names."""
    patients = [f"Brats18_P{i:02d}_1" for i in range(12)]
    for patient in patients:
        for suffix in suffixes:
            _save(brats / patient / f"{patient}_{suffix}.nii.gz", np.zeros((2, 2, 2), np.float32))
    return patients


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


def _load_brats2018():
    spec = importlib.util.spec_from_file_location("brats2018", SCRIPT.parent / "brats2018.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_brats2018_folds_never_test_a_training_patient_and_test_each_patient_once():
    script = _load_brats2018()
    patients = [f"Brats18_P{i:02d}_1" for i in range(12)][::-1]  # order of discovery does not matter
    folds = script.make_folds(patients)
    assert [f.name for f in folds] == ["1", "2", "3"]
    tested = [p for f in folds for p in f.test]
    assert sorted(tested) == sorted(patients)  # every patient exactly once
    assert [len(f.test) for f in folds] == [4, 4, 4]
    for fold in folds:
        assert not set(fold.train) & set(fold.test)
        assert fold.validation not in fold.train and fold.validation not in fold.test
        assert len(fold.train) == 7 and set(fold.train) | set(fold.test) | {fold.validation} == set(patients)
    # patient i of the sorted list tests in fold i % 3 + 1; validation: next fold's first test patient
    assert folds[0].test == ("Brats18_P00_1", "Brats18_P03_1", "Brats18_P06_1", "Brats18_P09_1")
    assert [f.validation for f in folds] == ["Brats18_P01_1", "Brats18_P02_1", "Brats18_P00_1"]
    assert script.make_folds(patients) == folds  # deterministic


def test_brats2018_training_folder_links_exactly_the_training_patients(tmp_path):
    script = _load_brats2018()
    brats = tmp_path / "brats"
    patients = _empty_brats(brats, ("t2", "seg"))
    assert script.patients_in(brats) == patients
    fold = script.make_folds(patients)[1]
    folder = script.training_folder(tmp_path / "work", brats, "T2", "scratch", fold)
    linked = sorted(p.parent.name for p in folder.glob("*/t2.nii.gz"))
    assert linked == sorted(fold.train)
    for patient in linked:
        assert (folder / patient / "seg.nii.gz").resolve() == (
            brats / patient / f"{patient}_seg.nii.gz"
        ).resolve()
    assert script.training_folder(tmp_path / "work", brats, "T2", "t1init", fold) == folder  # links reused


def _fake_brats2018_run(tmp_path, contrast: str, right_start: str, starts: tuple[str, ...]):
    """Twelve 8^3 patients and saved maps standing in for the fold models of ``starts``: a fold's
    ``right_start`` model finds the tumour of every patient it tested and of its validation
    patient, every other start ranks it last, and every other map of the same name would be
    wrong. The Bernoulli diffusion fold models are right only on the patients their fold tested."""
    script = _load_brats2018()
    brats, work = tmp_path / "brats", tmp_path / "work"
    patients = [f"Brats18_P{i:02d}_1" for i in range(12)]
    lesion = np.zeros((8, 8, 8), bool)
    lesion[3:5, 3:5, 3:5] = True
    brain = np.zeros_like(lesion)
    brain[1:7, 1:7, 1:7] = True
    rng = np.random.default_rng(0)
    for patient in patients:
        _save(brats / patient / f"{patient}_seg.nii.gz", lesion.astype(np.uint8) * 2)
        for channel in script.channels(contrast):
            scan = np.where(brain, rng.uniform(1, 2, brain.shape), 0)
            _save(brats / patient / f"{patient}_{script.SUFFIX[channel]}.nii.gz", scan)
    folds = script.make_folds(patients)
    for fold in folds:
        for start in (s for s in starts if s != script.BERDIFF):
            model = script.model_path(work, contrast, start, fold)
            (model / "training").mkdir(parents=True)
            (model / "training" / "log.csv").write_text(f"step,elapsed_s\n{script.STEPS},60\n")
            (model / "disyre.json").write_text(json.dumps({"training": {"device": "cpu", "machine": "test"}}))
            right = lesion if start == right_start else ~lesion & brain
            for patient in patients:
                seen = patient in (*fold.test, fold.validation)
                _save(work / "maps" / model.name / f"{patient}_S4_anomaly_map.nii.gz",
                      (right if seen else ~lesion & brain).astype(np.float32))  # fmt: skip
        if script.BERDIFF not in starts:
            continue
        berdiff = script.model_path(work, contrast, script.BERDIFF, fold)
        (berdiff / "training").mkdir(parents=True)
        (berdiff / "training" / "log.csv").write_text("stage,step,loss,elapsed_s\ndiffusion,40,0.7,120\n")
        (berdiff / "berdiff.json").write_text(
            json.dumps({"training": {"diffusion_steps": 40, "device": "cpu"}})
        )
        for patient in patients:
            _save(work / "maps" / berdiff.name / f"{patient}_berdiff_anomaly_map.nii.gz",
                  (lesion if patient in fold.test else ~lesion & brain).astype(np.float32))  # fmt: skip
    args = argparse.Namespace(
        work=work, brats=brats, contrasts=[contrast], starts=list(starts), extra_test=None, channel_maps=False
    )
    return script, args, folds


def _pooled_rows(out: str, contrast: str) -> tuple[dict[str, list[str]], str, list[str]]:
    """The pooled table's rows by score name, and the per-patient table's header and rows."""
    pooled, per_patient = out[out.index(f"**{contrast}: all 12 patients") :].split("\n\n")[1:3]
    rows = {
        line.strip("| ").split(" | ")[0]: line.strip("| ").split(" | ")[1:4]
        for line in pooled.splitlines()[2:]
    }
    header, _, *patient_rows = per_patient.splitlines()
    return rows, header, patient_rows


def test_brats2018_pooled_table_scores_each_patient_with_its_fold_and_the_nested_choice(tmp_path, capsys):
    """The nested choice must be scratch (validation AP 1) in every fold, and the pooled rows must
    use each patient's own fold, for DISYRE and the Bernoulli diffusion fold models alike."""
    script, args, folds = _fake_brats2018_run(tmp_path, "T2", "scratch", ("scratch", "t1init", "berdiff"))

    script.report(args, folds)

    out = capsys.readouterr().out
    rows, header, patient_rows = _pooled_rows(out, "T2")
    nested = header.split(" | ").index("DISYRE nested")
    assert len(patient_rows) == 12
    assert all(row.split(" | ")[nested] == "1.000 / 1.000 / 1.000" for row in patient_rows)
    assert rows["DISYRE nested"] == ["1.000", "1.000", "1.000"]
    assert rows["DISYRE scratch"] == ["1.000", "1.000", "1.000"]
    assert rows["DISYRE t1init"][2] == "0.000"  # AUROC: every tumour voxel ranked last
    assert out.count("nested choice: scratch, post-processing: none") == 3
    assert "T2_scratch_fold1: 1 min on cpu (test)" in out
    assert rows["Bernoulli diffusion"] == ["1.000", "1.000", "1.000"]
    assert "T2_berdiff_fold3: 2 min on cpu (?)" in out


def test_brats2018_t1ce_nested_choice_takes_t1init_only(tmp_path, capsys):
    """T1ce's nested candidates are the t1init start alone (the 18:30 UTC amendment): a from-scratch
    model that is perfect on the validation patient is reported but not chosen, and without the
    from-scratch models the folds are chosen all the same, not pending."""
    script, args, folds = _fake_brats2018_run(tmp_path, "T1ce", "scratch", ("scratch", "t1init"))
    for fold in folds:  # a flat t1init map on the validation patient: no post-processing can help it
        model = script.model_path(args.work, "T1ce", "t1init", fold)
        _save(args.work / "maps" / model.name / f"{fold.validation}_S4_anomaly_map.nii.gz",
              np.zeros((8, 8, 8), np.float32))  # fmt: skip

    script.report(args, folds)
    for fold in folds:
        shutil.rmtree(script.model_path(args.work, "T1ce", "scratch", fold))
    args.starts = ["t1init"]
    script.report(args, folds)

    with_scratch, without_scratch = capsys.readouterr().out.split("**T1ce fold 1")[1:]
    rows, _, _ = _pooled_rows(with_scratch, "T1ce")
    assert rows["DISYRE scratch"] == ["1.000", "1.000", "1.000"]
    assert rows["DISYRE nested"] == rows["DISYRE t1init"]
    assert rows["DISYRE nested"][2] == "0.000"  # the t1init maps rank every tumour voxel last
    for out in (with_scratch, without_scratch):
        assert out.count("nested choice: t1init, post-processing: none") == 3
        assert "pending" not in out
    assert script.NESTED_STARTS["T2"] == script.NESTED_STARTS["FLAIR"] == ("scratch", "t1init")


def test_brats2018_bernoulli_diffusion_fold_model_trains_at_the_preset_and_resumes(tmp_path, monkeypatch):
    """The pre-registered second-method model: `train --method berdiff` on the fold's training folder,
    with none of DISYRE's step count or EMA, resumed while unfinished, skipped once finished."""
    script = _load_brats2018()
    brats, work = tmp_path / "brats", tmp_path / "work"
    patients = _empty_brats(brats, ("t2", "seg"))
    fold = script.make_folds(patients)[0]
    commands = []
    monkeypatch.setattr(script, "run_cli", commands.append)
    script.train(work, brats, "T2", script.BERDIFF, fold)
    command = commands[-1]
    assert command[:4] == [
        "train",
        str(work / "data" / "T2_berdiff_fold1"),  # its own links, never DISYRE's folder
        "--out",
        str(work / "models" / "T2_berdiff_fold1"),
    ]
    assert command[command.index("--method") + 1] == "berdiff" and "--contrast" in command
    assert "--steps" not in command and "--ema" not in command and "--resume" not in command
    assert (
        "masked Bernoulli diffusion, BraTS 2018 T2, tumour-free slices of"
        in command[command.index("--description") + 1]
    )
    model = work / "models" / "T2_berdiff_fold1"
    (model / "training").mkdir(parents=True)
    (model / "training" / "state.pt").write_bytes(b"")
    (model / "training" / "log.csv").write_text("stage,step,loss,elapsed_s\ndiffusion,30,0.7,120\n")
    (model / "berdiff.json").write_text(json.dumps({"training": {"diffusion_steps": 40}}))
    assert not script.is_finished(model)
    assert script.model_record(model) == "T2_berdiff_fold1: not finished (diffusion step 30)"
    script.train(work, brats, "T2", script.BERDIFF, fold)
    assert commands[-1][-1] == "--resume"
    (model / "training" / "log.csv").write_text("stage,step,loss,elapsed_s\ndiffusion,40,0.7,120\n")
    assert script.is_finished(model)
    script.train(work, brats, "T2", script.BERDIFF, fold)
    assert len(commands) == 2  # finished: not trained again


def test_brats2018_multi_contrast_folds_link_every_channel_and_train_with_a_pattern_each(
    tmp_path, monkeypatch
):
    """FLAIR+T2 fold models: each training patient's folder links both contrasts and the label; the
    train command names the channels in order, widens the healthy T1 model, and only t1init exists."""
    script = _load_brats2018()
    brats = tmp_path / "brats"
    patients = _empty_brats(brats, ("flair", "t2", "seg"))
    fold = script.make_folds(patients)[0]
    commands = []
    monkeypatch.setattr(script, "run_cli", commands.append)
    script.train(tmp_path / "work", brats, "FLAIR+T2", "t1init", fold)
    folder = tmp_path / "work" / "data" / "FLAIR+T2_fold1"
    for name in ("flair", "t2", "seg"):
        assert sorted(p.parent.name for p in folder.glob(f"*/{name}.nii.gz")) == sorted(fold.train)
    (command,) = commands
    assert command[command.index("--preset") + 1 : command.index("--exclude-label-name")] == [
        "small", "--scan-name=flair=flair.nii.gz", "--scan-name=t2=t2.nii.gz"
    ]  # fmt: skip
    assert command[command.index("--init") + 1] == str(script.HEALTHY_T1) and "--contrast" not in command
    assert script.NESTED_STARTS["FLAIR+T1+T1ce+T2"] == ("t1init",)
    assert script.channels("FLAIR+T1+T1ce+T2") == ("FLAIR", "T1", "T1ce", "T2")


def test_brats2018_four_contrast_bernoulli_diffusion_trains_with_the_validation_patient_held_out(
    tmp_path, monkeypatch
):
    """Issue 29 (PREREGISTERED.md): `train --method berdiff` on the four contrasts in channel order,
    from links of its own; the fold's validation patient alone in its own folder as --val-dir; no
    Bernoulli diffusion model of FLAIR+T2, none from scratch."""
    script = _load_brats2018()
    contrast = "FLAIR+T1+T1ce+T2"
    brats, work = tmp_path / "brats", tmp_path / "work"
    patients = _empty_brats(brats, ("flair", "t1", "t1ce", "t2", "seg"))
    fold = script.make_folds(patients)[1]
    commands = []
    monkeypatch.setattr(script, "run_cli", commands.append)
    script.train(work, brats, contrast, script.BERDIFF, fold)
    (command,) = commands
    data, held_out = (
        work / "data" / f"{contrast}_berdiff_fold2",
        work / "data" / f"{contrast}_berdiff_fold2_validation",
    )
    assert command[:4] == ["train", str(data), "--out", str(work / "models" / f"{contrast}_berdiff_fold2")]
    assert command[command.index("--preset") + 1 : command.index("--exclude-label-name")] == [
        "small", "--scan-name=flair=flair.nii.gz", "--scan-name=t1=t1.nii.gz",
        "--scan-name=t1ce=t1ce.nii.gz", "--scan-name=t2=t2.nii.gz",
    ]  # fmt: skip
    assert command[command.index("--val-dir") + 1] == str(held_out) and "--val-count" not in command
    assert (
        command[command.index("--save-every") + 1] == "100"
        and command[command.index("--method") + 1] == "berdiff"
    )
    assert not {"--init", "--ema", "--steps", "--contrast", "--resume", "--seed"} & set(command)
    for name in ("flair", "t1", "t1ce", "t2", "seg"):
        assert sorted(p.parent.name for p in data.glob(f"*/{name}.nii.gz")) == sorted(fold.train)
        assert [p.parent.name for p in held_out.glob(f"*/{name}.nii.gz")] == [fold.validation]
    assert not (work / "data" / f"{contrast}_fold2").exists()  # DISYRE's folder: not touched
    assert script.trains(contrast, script.BERDIFF) and script.trains(contrast, "t1init")
    assert not script.trains("FLAIR+T2", script.BERDIFF) and not script.trains(contrast, "scratch")
    assert script.trains("T2", script.BERDIFF) and script.trains("T1ce", "scratch")


def test_brats2018_four_contrast_bernoulli_diffusion_is_scored_beside_disyre(tmp_path, capsys):
    """Each patient scored by the four-contrast Bernoulli diffusion model of the fold that tested it
    (right only there), reported beside four-contrast DISYRE, never chosen."""
    contrast = "FLAIR+T1+T1ce+T2"
    script, args, folds = _fake_brats2018_run(tmp_path, contrast, "t1init", ("t1init", "berdiff"))

    script.report(args, folds)

    out = capsys.readouterr().out
    rows, _, patient_rows = _pooled_rows(out, contrast)
    assert len(patient_rows) == 12
    assert rows["Bernoulli diffusion"] == ["1.000", "1.000", "1.000"]
    assert rows["DISYRE nested"] == rows["DISYRE t1init"] == ["1.000", "1.000", "1.000"]
    assert out.count("nested choice: t1init, post-processing: none") == 3
    assert f"{contrast}_berdiff_fold3: 2 min on cpu (?)" in out


def test_brats2018_channel_maps_score_each_contrast_alone_and_check_their_mean(tmp_path, capsys):
    """``--channel-maps``: each contrast's map of the t1init fold models scored alone (saved maps
    standing in: the FLAIR channel finds the tumour, the T2 channel is flat, so their mean is the
    saved combined map), and the mean checked against the saved combined map."""
    contrast = "FLAIR+T2"
    script, args, folds = _fake_brats2018_run(tmp_path, contrast, "t1init", ("t1init",))
    lesion = np.zeros((8, 8, 8), np.float32)
    lesion[3:5, 3:5, 3:5] = 1
    for fold in folds:
        maps = args.work / "maps" / script.model_path(args.work, contrast, "t1init", fold).name
        for patient in fold.test:
            np.savez(maps / f"{patient}_S4_channel_maps.npz", flair=2 * lesion, t2=np.zeros_like(lesion))
    args.channel_maps = True

    script.report(args, folds)

    out = capsys.readouterr().out
    diagnostic = out[out.index(f"**{contrast}, diagnostic") :]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in diagnostic.splitlines()[4:9]}
    assert (
        rows["DISYRE t1init (mean of the channel maps)"]
        == rows["DISYRE t1init, flair channel map"]
        == "1.000"
    )
    prevalence = 8 / 6**3  # a flat map's AP: the tumour's share of the region
    assert rows["DISYRE t1init, t2 channel map"] == f"{prevalence:.3f}"
    assert "mean of the channel maps vs the saved combined map: max |difference| 0.00e+00" in diagnostic


def test_berdiff_variants_copy_and_continue_the_fold_model_or_start_afresh_with_one_change(
    tmp_path, monkeypatch
):
    """The pre-registered fold-1 variants (issue 29): ``longer`` continues a copy of the fold-1 model
    (which stays as it is) to 8000 diffusion steps; ``code128`` and ``symmetric`` start afresh with
    one option added to the fold-1 command; finished variants are skipped."""
    spec = importlib.util.spec_from_file_location("berdiff_variants", SCRIPT.parent / "berdiff_variants.py")
    variants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(variants)
    script, contrast = variants.b, variants.CONTRAST
    brats, work = tmp_path / "brats", tmp_path / "work"
    patients = _empty_brats(brats, ("flair", "t1", "t1ce", "t2", "seg"))
    fold = script.make_folds(patients)[0]
    commands = []
    monkeypatch.setattr(script, "run_cli", commands.append)
    base = work / "models" / f"{contrast}_berdiff_fold1"
    (base / "training").mkdir(parents=True)
    (base / "training" / "log.csv").write_text("stage,step,loss,elapsed_s\ndiffusion,4000,0.6,60\n")
    (base / "berdiff.json").write_text(json.dumps({"training": {"diffusion_steps": 4000}}))
    for variant in ("longer", "code128", "symmetric"):
        variants.train_variant(work, brats, fold, variant)
    longer, code128, symmetric = commands
    fold_command = script.training_command(work, brats, contrast, script.BERDIFF, fold, base)
    out = longer.index("--out") + 1
    assert longer[out] == str(base.with_name(f"{base.name}_longer")) and longer[-3:] == ["--diffusion-steps", "8000", "--resume"]  # fmt: skip
    assert (base.with_name(f"{base.name}_longer") / "berdiff.json").exists()  # the copy continues
    assert code128[-2:] == ["--code-size", "128"] and symmetric[-2:] == ["--forward-process", "symmetric"]
    for command, variant in zip(commands, ("longer", "code128", "symmetric"), strict=True):
        same = [
            a for i, a in enumerate(command[: len(fold_command)]) if i not in (out, len(fold_command) - 1)
        ]
        assert same == [a for i, a in enumerate(fold_command) if i not in (out, len(fold_command) - 1)]
        assert command[len(fold_command) - 1].endswith(f"; variant {variant} ({' '.join(variants.VARIANTS[variant][0])})")  # fmt: skip
    longer_model = base.with_name(f"{base.name}_longer")
    (longer_model / "training" / "log.csv").write_text("stage,step,loss,elapsed_s\ndiffusion,8000,0.6,60\n")
    (longer_model / "berdiff.json").write_text(json.dumps({"training": {"diffusion_steps": 8000}}))
    variants.train_variant(work, brats, fold, "longer")
    assert len(commands) == 3  # trained: skipped


def test_berdiff_map_reference_chooses_on_the_validation_patient_and_scores_the_test_patients_with_it(
    tmp_path, monkeypatch
):
    """The pre-registered nested choice (issue 29): the reference with the higher validation AP (the
    official one on a tie) gives the nested row of the fold's test patients; both rows are kept."""
    spec = importlib.util.spec_from_file_location("berdiff_map_reference", SCRIPT.parent / "berdiff_map_reference.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.choose_reference({"input": 0.2, "reconstruction": 0.3}) == "reconstruction"
    assert module.choose_reference({"input": 0.3, "reconstruction": 0.3}) == "input"
    script = module.b
    fold = script.make_folds([f"Brats18_P{i:02d}_1" for i in range(12)])[0]
    label = np.array([True, False, False, True])

    def patient(folder, name, contrast):
        return argparse.Namespace(case=name, label=label, region=np.ones(4, bool), scores={}, seconds={})

    def score(self, item, key, model, maps, post=None, reference="input"):
        good = label.astype(np.float32) + 0.1 * np.arange(4)
        # the validation patient favours the reconstruction map; the test patients would favour input
        favoured = "reconstruction" if item.case == fold.validation else "input"
        item.scores[key] = good if reference == favoured else 1 - good
        item.seconds[key] = {"input": 1.0, "reconstruction": 2.0}[reference]

    monkeypatch.setattr(script, "load_patient", patient)
    monkeypatch.setattr(script.Models, "score", score)
    args = argparse.Namespace(work=tmp_path, brats=tmp_path)
    items, chosen, aps = module.fold_rows(args, fold, script.Models())
    assert chosen == "reconstruction" and aps == {"input": pytest.approx(5 / 12), "reconstruction": 1.0}  # (1/3 + 2/4) / 2
    assert [item.case for item in items] == list(fold.test)
    for item in items:
        assert np.array_equal(item.scores[module.NESTED], item.scores[module.NAMES["reconstruction"]])
        assert item.seconds[module.NESTED] == 2.0
        assert set(item.scores) == {module.NESTED, *module.NAMES.values()}
