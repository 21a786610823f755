"""The DISYRE paper's BraTS tasks on the 12 BraTS 2018 patients of ../shared, leave-patients-out.

Tasks (``--contrasts``):

- ``T1``: the bundled healthy T1 model on every patient's T1 (the paper's BraTS-T1 task): no BraTS
  data in its training, so all 12 patients are test patients and nothing is trained.
- ``T2``, ``FLAIR``, ``T1ce``: one model per fold and per start (``scratch``: random weights;
  ``t1init``: fine-tuned from the bundled healthy T1 model), trained with ``napari-disyre train``
  on the tumour-free axial slices (no slice touching label > 0) of the fold's seven training patients.

Folds (deterministic, :func:`make_folds`): the 12 patient folders sorted by name; patient ``i``
(0-based) is a test patient of fold ``i % 3 + 1``, so each fold tests four patients from several
sites and every patient is tested exactly once. Of the eight other patients, one is held out as the
fold's validation patient (nested selection): the first test patient of the next fold. It is never
trained on and is the only tumour-bearing scan used to choose a setting; the remaining seven train.

Selection (written down before the run in benchmarks/brats2018_PREREGISTERED.md): per fold, the
start (scratch or t1init; t1init only for T1ce, see ``NESTED_STARTS``) and the map post-processing
(none, brain-mask erosion, 3D median filter, both) with the highest AP on the validation patient;
the fold's test patients are then scored with that choice. Every row is printed, chosen or not.

Several contrasts (``--contrasts FLAIR+T2 FLAIR+T1+T1ce+T2``, issue 28, pre-registered in
PREREGISTERED.md before any of their training): one DISYRE model of 2 or 4 channels per fold, the
same folds, tumour-free slices and nested choice, the ``t1init`` start only (the healthy T1 model
widened to the channels by ``train --init``); the combined map (mean of the channel maps) is scored,
beside the z-scored intensity of each contrast. ``--smoke-steps N`` trains fold 1 of each asked
configuration for N steps into ``<work>/smoke`` (never scored) to prove the command and time a step.

Second method (``--starts berdiff``, the 08:09 UTC amendment of the pre-registration): one masked Bernoulli
diffusion model per fold (``train --method berdiff --preset small``) on the same tumour-free slices of
the same seven patients, scored at its defaults (L, P from its berdiff.json) beside DISYRE on the
same voxels; reported, never selected. Its four-contrast model (issue 29, pre-registered in
PREREGISTERED.md before it could be trained): one per fold on FLAIR+T1+T1ce+T2 (``--starts berdiff``),
its quality gates and healthy-score quantiles measured on the fold's validation patient's tumour-free
slices (``--val-dir``), scored on the combined map without post-processing beside four-contrast DISYRE.
Bernoulli diffusion links its scans in data folders of its own, never in DISYRE's.

Metrics (whole tumour, label > 0, on the scan's non-zero voxels) per fold, per patient, and pooled
over the 12 patients with each patient scored by the model of the fold that tested it (the only
model that never saw it). Baselines: ``intensity`` (raw scanner values) and ``intensity-zscore``
(z-scored inside the brain), inverted for T1.

The scans stay in ../shared (research licence); models, maps and logs go under --work, outside the
repository (never commit them). Resumable: a rerun skips finished models and continues interrupted
ones with ``train --resume``; saved maps are reused. Run from the repository root, e.g.:

    nice -n 19 python benchmarks/brats2018.py --contrasts T2 --train-only   # the trainings (hours)
    python benchmarks/brats2018.py --contrasts T1 T2 --evaluate-only        # the README tables
    python benchmarks/brats2018.py --contrasts T2 --evaluate-only --extra-test OTHER_BRATS_DIR
    nice -n 19 python benchmarks/brats2018.py --contrasts FLAIR --starts berdiff --train-only   # one kind
    nice -n 19 python benchmarks/brats2018.py --contrasts FLAIR+T2 FLAIR+T1+T1ce+T2 --train-only
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/brats2018.py --contrasts FLAIR+T1+T1ce+T2 --starts berdiff --train-only
    python benchmarks/brats2018.py --contrasts FLAIR+T2 FLAIR+T1+T1ce+T2 --smoke-steps 5
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's napari_disyre, as for the train commands below
from napari_disyre import load_checkpoint  # noqa: E402
from napari_disyre.detection.detectors import checkpoint_kind, default_settings  # noqa: E402
from napari_disyre.detection.postprocess import MapPostprocessing, record_postprocessing  # noqa: E402
from napari_disyre.evaluation.metrics import average_precision  # noqa: E402
from napari_disyre.evaluation.scoring import (  # noqa: E402
    Case,
    ScoredCase,
    load_case,
    rank_combination,
    score_case,
    score_detection,
    summarise,
    zscore_in_region,
)
from napari_disyre.outputs import user_cache_dir  # noqa: E402

# ../shared beside the checkout (or beside a folder of worktrees above it)
BRATS = next(
    (p / "shared/data/brats2018" for p in ROOT.parents if (p / "shared/data/brats2018").is_dir()),
    ROOT.parent / "shared/data/brats2018",
)
WORK = user_cache_dir("brats2018")
HEALTHY_T1 = ROOT / "src" / "napari_disyre" / "data" / "demo_t1_checkpoint"
SUFFIX = {"T1": "t1", "T2": "t2", "FLAIR": "flair", "T1ce": "t1ce"}  # Brats18_X_1_<suffix>.nii.gz
TRAINED = ("T2", "FLAIR", "T1ce")
STARTS = ("scratch", "t1init")
# The starts the nested choice picks from: T1ce only fine-tunes (PREREGISTERED.md, 18:30 UTC amendment:
# one session's CPU fits three T1ce models; every T2 and FLAIR validation patient chose t1init).
NESTED_STARTS = {"T2": STARTS, "FLAIR": STARTS, "T1ce": ("t1init",)}
# Several contrasts as one input (issue 28): the channels of each configuration, in order; t1init only.
MULTI = {"FLAIR+T2": ("FLAIR", "T2"), "FLAIR+T1+T1ce+T2": ("FLAIR", "T1", "T1ce", "T2")}
NESTED_STARTS.update(dict.fromkeys(MULTI, ("t1init",)))
BERDIFF = "berdiff"  # the second method's fold models (<contrast>_berdiff_fold<k>): reported, never selected
BERDIFF_MULTI = ("FLAIR+T1+T1ce+T2",)  # its configurations of several contrasts (issue 29)
N_FOLDS = 3
# Fixed before the run (PREREGISTERED.md): training and evaluation settings.
STEPS, PRESET, EVAL_STEPS, SAVE_EVERY = 1000, "small", 4, 100
COMBINED = "DISYRE nested + intensity (rank mean)"  # reported, never selected


@dataclass(frozen=True)
class Fold:
    """One leave-patients-out split: ``train`` never meets ``validation`` or ``test``."""

    name: str
    test: tuple[str, ...]
    validation: str
    train: tuple[str, ...]


def make_folds(patients: list[str], n_folds: int = N_FOLDS) -> list[Fold]:
    """Patient ``i`` of the sorted list tests in fold ``i % n_folds + 1``; fold k's validation
    patient is the first test patient of fold k + 1 (wrapping round); the rest train."""
    ordered = sorted(patients)
    tests = [tuple(ordered[i::n_folds]) for i in range(n_folds)]
    folds = []
    for k in range(n_folds):
        validation = tests[(k + 1) % n_folds][0]
        train = tuple(p for p in ordered if p not in tests[k] and p != validation)
        folds.append(Fold(str(k + 1), tests[k], validation, train))
    return folds


def patients_in(folder: Path) -> list[str]:
    """The BraTS case folders (``Brats18_*``) of ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / f"{p.name}_seg.nii.gz").exists())


def channels(contrast: str) -> tuple[str, ...]:
    """The contrasts a configuration's model takes: ``FLAIR+T2`` -> FLAIR, T2; ``T2`` -> T2."""
    return MULTI.get(contrast, (contrast,))


def channel_files(contrast: str) -> dict[str, str]:
    """Each channel's file name in a patient folder of :func:`link_patients`, in channel order."""
    return {SUFFIX[c]: f"{SUFFIX[c]}.nii.gz" for c in channels(contrast)}


def scan_path(folder: Path, patient: str, contrast: str) -> Path:
    return folder / patient / f"{patient}_{SUFFIX[contrast]}.nii.gz"


def label_path(folder: Path, patient: str) -> Path:
    return folder / patient / f"{patient}_seg.nii.gz"


# -- training -------------------------------------------------------------------------------------


def run_cli(arguments: list[str]) -> None:
    """Run a napari-disyre command of this checkout (its src/ first on the path), echoing it."""
    print("$ napari-disyre", " ".join(arguments), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-m", "napari_disyre.cli", *arguments], check=True, env=env)


def trains(contrast: str, start: str) -> bool:
    """Whether ``start`` has fold models of ``contrast``: every start of a one-contrast task; of
    several contrasts, DISYRE's nested start and Bernoulli diffusion of BERDIFF_MULTI."""
    return contrast not in MULTI or start in NESTED_STARTS[contrast] or (start == BERDIFF and contrast in BERDIFF_MULTI)  # fmt: skip


def data_folder(work: Path, contrast: str, start: str, fold: Fold) -> Path:
    """DISYRE's starts share ``<contrast>_fold<k>``; Bernoulli diffusion has ``<contrast>_berdiff_fold<k>``,
    so that runs of the two methods side by side never make the same links at once."""
    method = f"_{BERDIFF}" if start == BERDIFF else ""
    return work / "data" / f"{contrast}{method}_fold{fold.name}"


def link_patients(folder: Path, brats: Path, contrast: str, patients: tuple[str, ...]) -> Path:
    """``folder`` of links to the patients' scans and labels under fixed names
    (``<patient>/t2.nii.gz``, ``<patient>/seg.nii.gz``), so that ``train --pattern`` (or
    ``--scan-name``) and ``--exclude-label-name`` select exactly those patients; a rerun reuses them."""
    for patient in patients:
        case = folder / patient
        case.mkdir(parents=True, exist_ok=True)
        scans = [(case / f"{SUFFIX[c]}.nii.gz", scan_path(brats, patient, c)) for c in channels(contrast)]
        for link, target in (*scans, (case / "seg.nii.gz", label_path(brats, patient))):
            if not link.is_symlink():
                link.symlink_to(target)
    return folder


def training_folder(work: Path, brats: Path, contrast: str, start: str, fold: Fold) -> Path:
    """The fold's seven training patients (:func:`link_patients`)."""
    return link_patients(data_folder(work, contrast, start, fold), brats, contrast, fold.train)


def validation_folder(work: Path, brats: Path, contrast: str, start: str, fold: Fold) -> Path:
    """The fold's validation patient alone, in the training folder's layout (``--val-dir``)."""
    folder = data_folder(work, contrast, start, fold)
    return link_patients(folder.with_name(f"{folder.name}_validation"), brats, contrast, (fold.validation,))


def model_path(work: Path, contrast: str, start: str, fold: Fold) -> Path:
    return work / "models" / f"{contrast}_{start}_fold{fold.name}"


def last_log_row(model: Path) -> dict[str, str]:
    """The last row of the model's training log (step, loss, ..., elapsed_s); empty when none."""
    log = model / "training" / "log.csv"
    rows = list(csv.DictReader(log.read_text().splitlines())) if log.exists() else []
    return rows[-1] if rows else {}


def metadata_file(model: Path) -> Path:
    return model / ("berdiff.json" if f"_{BERDIFF}_fold" in model.name else "disyre.json")


def is_finished(model: Path) -> bool:
    """Saved after its last step: DISYRE's STEPS, or the diffusion steps its berdiff.json records."""
    meta = metadata_file(model)
    if not meta.exists():
        return False
    row = last_log_row(model)
    if meta.name == "berdiff.json":
        steps = int(json.loads(meta.read_text()).get("training", {})["diffusion_steps"])
        return row.get("stage") == "diffusion" and int(row["step"]) >= steps
    return int(row.get("step", 0)) >= STEPS


def training_command(work: Path, brats: Path, contrast: str, start: str, fold: Fold, model: Path, steps: int = STEPS) -> list[str]:  # fmt: skip
    """The ``napari-disyre train`` arguments of one fold model written to ``model`` (no resume flag)."""
    data = training_folder(work, brats, contrast, start, fold)
    patients = f"tumour-free slices of {' + '.join(fold.train)} (fold {fold.name}; validation {fold.validation}; test {' + '.join(fold.test)})"  # fmt: skip
    if contrast in MULTI:  # one file per contrast in each patient folder, in the channel order
        selection = [f"--scan-name={name}={file}" for name, file in channel_files(contrast).items()]
    else:
        selection = ["--pattern", f"*/{SUFFIX[contrast]}.nii.gz", "--contrast", contrast]
    held_out = ["--val-count", "0"]
    if start == BERDIFF and contrast in MULTI:  # issue 29: gates and quantiles on the validation patient
        held_out = ["--val-dir", str(validation_folder(work, brats, contrast, start, fold))]
    command = [
        "train", str(data), "--out", str(model), "--preset", PRESET, *selection,
        "--exclude-label-name", "seg.nii.gz", *held_out, "--save-every", str(SAVE_EVERY),
    ]  # fmt: skip
    if start == BERDIFF:  # the amendment: the preset's own step counts, no other option
        return command + ["--method", BERDIFF, "--description", f"masked Bernoulli diffusion, BraTS 2018 {contrast}, {patients}"]  # fmt: skip
    command += ["--steps", str(steps), "--ema", "--description", f"BraTS 2018 {contrast}, {patients}; {start}"]  # fmt: skip
    return command + (["--init", str(HEALTHY_T1)] if start == "t1init" else [])


def continue_or_start(model: Path) -> list[str]:
    """``--resume`` when the run saved a state, else ``--overwrite`` of whatever it left (nothing to
    continue), else nothing."""
    if (model / "training" / "state.pt").exists():
        return ["--resume"]
    return ["--overwrite"] if model.exists() else []


def train(work: Path, brats: Path, contrast: str, start: str, fold: Fold, steps: int = STEPS) -> None:
    """Train one fold model unless it is finished; continue it with ``--resume`` if interrupted
    (``steps`` other than STEPS: a smoke run, started afresh)."""
    model = model_path(work, contrast, start, fold)
    if steps == STEPS and is_finished(model):
        print(f"finished earlier: {model}", flush=True)
        return
    command = training_command(work, brats, contrast, start, fold, model, steps)
    run_cli(command + (["--overwrite"] if steps != STEPS else continue_or_start(model)))


def model_record(model: Path) -> str:
    """Wall time and device of a trained model, from its log and checkpoint metadata."""
    if not is_finished(model):
        row = last_log_row(model)
        return f"{model.name}: not finished ({' '.join(filter(None, (row.get('stage'), 'step', row.get('step', '0'))))})"
    training = json.loads(metadata_file(model).read_text()).get("training", {})
    minutes = float(last_log_row(model)["elapsed_s"]) / 60
    return (
        f"{model.name}: {minutes:.0f} min on {training.get('device', '?')} ({training.get('machine', '?')})"
    )


# -- evaluation -----------------------------------------------------------------------------------


def baselines_of(contrast: str) -> tuple[str, ...]:
    """T1 shows tumour dark (and bright where it enhances): the inverted baselines too."""
    both = ("intensity", "intensity-zscore")
    return (*both, "inverted-intensity", "inverted-intensity-zscore") if contrast == "T1" else both


@dataclass
class Patient(ScoredCase):
    """A scored case cropped to its region's bounding box ``box`` (twelve whole volumes with several
    scores each would not fit in memory); ``full`` keeps the uncropped region that detection and
    post-processing work on."""

    box: tuple[slice, ...] = ()
    full: np.ndarray | None = None


def load_patient(folder: Path, patient: str, contrast: str) -> Patient:
    """The patient's scan, whole-tumour label (> 0), region (non-zero voxels) and baselines, cropped.
    Several contrasts: the scan is the first (FLAIR), the region the union of theirs, and the
    baselines each contrast's z-scored intensity."""
    scans = tuple((SUFFIX[c], scan_path(folder, patient, c)) for c in channels(contrast))
    case = Case(
        patient, scans[0][1], label_path(folder, patient), contrasts=scans if contrast in MULTI else ()
    )
    item = score_case(load_case(case), baselines=() if contrast in MULTI else baselines_of(contrast))
    if item.inputs is not None:
        for name, volume in item.inputs.volumes.items():
            item.scores[f"{name} intensity-zscore"] = zscore_in_region(volume.data, item.region)
            item.seconds[f"{name} intensity-zscore"] = 0.0
    box = tuple(slice(a.min(), a.max() + 1) for a in np.nonzero(item.region))
    scores = {name: score[box] for name, score in item.scores.items()}
    return Patient(
        item.case, item.scan, item.label[box], item.region[box], scores, item.seconds,
        inputs=item.inputs, box=box, full=item.region,
    )  # fmt: skip


class Models:
    """The checkpoints of the run, each loaded once when a map is missing; maps are saved raw."""

    def __init__(self) -> None:
        self.loaded: dict[Path, object] = {}

    def score(self, item: Patient, key: str, model: Path, maps: Path, post=None, reference: str = "input") -> None:  # fmt: skip
        """Add ``model``'s map of ``item`` as ``key`` (DISYRE at S = EVAL_STEPS; Bernoulli diffusion at
        its defaults, its map against ``reference``), post-processed by ``post``."""
        disyre = checkpoint_kind(model) == "disyre"
        tag = f"S{EVAL_STEPS}" if disyre else BERDIFF + ("_recon" if reference == "reconstruction" else "")
        if not (maps / f"{item.case.id}_{tag}_anomaly_map.nii.gz").exists() and model not in self.loaded:
            self.loaded[model] = load_checkpoint(model)
        full = ScoredCase(item.case, item.scan, item.full, item.full, inputs=item.inputs)  # no label needed
        # the official reference is left out of the map record, so its cached maps stay valid
        overrides = {"steps": EVAL_STEPS} if disyre else {"reference": reference}
        score_detection(full, self.loaded.get(model), None, key, tag, maps, postprocessing=post, **overrides)
        item.scores[key] = full.scores[key][item.box]
        item.seconds[key] = full.seconds[key]


def channel_maps(item: Patient, model: Path, maps: Path, models: Models) -> dict[str, np.ndarray]:
    """The per-contrast maps of a several-contrast DISYRE model (S = EVAL_STEPS, no post-processing),
    cropped to the item's box; computed once, then read from ``maps``."""
    cache = maps / f"{item.case.id}_S{EVAL_STEPS}_channel_maps.npz"
    if not cache.exists():
        from napari_disyre.detection.pipeline import detect

        if model not in models.loaded:
            models.loaded[model] = load_checkpoint(model)
        checkpoint = models.loaded[model]
        inputs = ScoredCase(item.case, item.scan, item.full, item.full, inputs=item.inputs).detection_input
        detection = detect(inputs, checkpoint, default_settings(checkpoint, steps=EVAL_STEPS), keep_restorations=False)  # fmt: skip
        maps.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, **detection.channel_maps)
    with np.load(cache) as saved:
        return {name: saved[name][item.box] for name in saved.files}


def channel_diagnostic(args, contrast: str, folds: list[Fold], models: Models) -> None:
    """Post hoc (written after the pooled four-contrast figure was seen; never selected): how each
    contrast's map of the t1init fold models scores alone, beside their mean (the combined map the
    pre-registered rows score) and that contrast's z-scored intensity. Checks that the mean of the
    channel maps is the saved combined map."""
    items, worst, combined = [], 0.0, "DISYRE t1init (mean of the channel maps)"
    for fold in folds:
        model = model_path(args.work, contrast, "t1init", fold)
        for patient in fold.test:
            item, maps = load_patient(args.brats, patient, contrast), args.work / "maps" / model.name
            models.score(item, combined, model, maps)
            per_channel = channel_maps(item, model, maps, models)
            mean = np.mean(list(per_channel.values()), axis=0)
            worst = max(worst, float(np.abs(mean - item.scores[combined]).max()))
            for name, score in per_channel.items():
                item.scores[f"DISYRE t1init, {name} channel map"] = score
                item.seconds[f"DISYRE t1init, {name} channel map"] = math.nan
            items.append(item)
    print(table(f"{contrast}, diagnostic (post hoc, never selected): each channel map of the t1init models alone, "
                f"no post-processing; {len(items)} patients, each by its own fold's model", items))  # fmt: skip
    print(f"- mean of the channel maps vs the saved combined map: max |difference| {worst:.2e}")


def candidates(starts: tuple[str, ...]) -> list[tuple[str, object]]:
    """The nested candidates of ``starts``, simplest first (PREREGISTERED.md)."""
    posts = [
        MapPostprocessing(0, 0),
        MapPostprocessing(3, 0),
        MapPostprocessing(0, 3),
        MapPostprocessing(3, 3),
    ]
    return [(start, post) for start in starts for post in posts]


def choose(work: Path, brats: Path, contrast: str, fold: Fold, models: Models) -> tuple | None:
    """The (start, post-processing) with the highest AP on the fold's validation patient; a later
    (less simple) candidate must beat the best so far by more than 0.005. None while a start of
    the fold's nested starts is unfinished. Also returns every candidate's validation AP."""
    starts = NESTED_STARTS[contrast]
    if not all(is_finished(model_path(work, contrast, start, fold)) for start in starts):
        return None
    item = load_patient(brats, fold.validation, contrast)
    tried, best = {}, None
    for start, post in candidates(starts):
        model = model_path(work, contrast, start, fold)
        models.score(item, "candidate", model, work / "maps" / model.name, post)
        ap = tried[start, post.describe()] = average_precision(
            item.scores["candidate"], item.label, item.region
        )
        if best is None or ap > best[2] + 0.005:
            best = (start, post, ap)
    return best[0], best[1], tried


def score_fold(args, contrast: str, fold: Fold, models: Models, patients: list[str], folder: Path, tag: str):
    """The fold's models on ``patients`` of ``folder``: each finished start without post-processing
    and, once chosen, the nested recipe; the Bernoulli diffusion model; the baselines."""
    choice = choose(args.work, args.brats, contrast, fold, models)
    items = []
    for patient in patients:
        item = load_patient(folder, patient, contrast)
        for start in args.starts:
            model = model_path(args.work, contrast, start, fold)
            if is_finished(model):
                name = "Bernoulli diffusion" if start == BERDIFF else f"DISYRE {start}"
                models.score(item, name, model, args.work / "maps" / f"{model.name}{tag}")
        if choice is not None:
            model = model_path(args.work, contrast, choice[0], fold)
            models.score(item, "DISYRE nested", model, args.work / "maps" / f"{model.name}{tag}", choice[1])
            item.scores[COMBINED] = rank_combination(
                item.scores["DISYRE nested"], item.scan.data[item.box], item.region
            )
            item.seconds[COMBINED] = item.seconds["DISYRE nested"]
        items.append(item)
    if choice is not None and choice[1].enabled:
        record_postprocessing(model_path(args.work, contrast, choice[0], fold), choice[1])
    return items, choice


def score_t1(args, patients: list[str], folder: Path, tag: str, models: Models):
    """The paper's BraTS-T1 task: the bundled healthy T1 model, no BraTS training."""
    items = []
    for patient in patients:
        item = load_patient(folder, patient, "T1")
        models.score(item, "DISYRE healthy T1 model", HEALTHY_T1, args.work / "maps" / f"T1_bundled{tag}")
        items.append(item)
    return items


def table(title: str, items: list) -> str:
    """Markdown: each score pooled over ``items``, then per patient (AP / best Dice / AUROC)."""
    summaries = summarise(items)
    names = [summary.name for summary in summaries]
    lines = [f"**{title}**", "", "| score | AP | best Dice | AUROC |", "|---|---|---|---|"]
    lines += [
        f"| {s.name} | {s.pooled.ap:.3f} | {s.pooled.best_dice:.3f} | {s.pooled.auroc:.3f} |"
        for s in summaries
    ]
    lines += [
        "",
        "| patient: AP / best Dice / AUROC | " + " | ".join(names) + " |",
        "|---" * (1 + len(names)) + "|",
    ]
    for item in items:
        cells = [summary.per_volume[item.case.id] for summary in summaries]
        lines.append(f"| {item.case.id.removeprefix('Brats18_').removesuffix('_1')} | "
                     + " | ".join(f"{m.ap:.3f} / {m.best_dice:.3f} / {m.auroc:.3f}" for m in cells) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def report(args, folds: list[Fold]) -> None:
    """Print the README tables of every asked contrast, per fold and pooled over the 12 patients."""
    models = Models()
    patients = patients_in(args.brats)
    extra = patients_in(args.extra_test) if args.extra_test else []
    for contrast in args.contrasts:
        if contrast == "T1":
            print(table("BraTS-T1: bundled healthy T1 model, all 12 patients (none trained on)",
                        score_t1(args, patients, args.brats, "", models)))  # fmt: skip
            if extra:
                print(table(f"BraTS-T1, extra test patients ({args.extra_test})",
                            score_t1(args, extra, args.extra_test, "_extra", models)))  # fmt: skip
            continue
        pooled = []
        for fold in folds:
            items, choice = score_fold(args, contrast, fold, models, list(fold.test), args.brats, "")
            pooled.extend(items)
            chosen = "pending (a start is unfinished)" if choice is None else (
                f"{choice[0]}, post-processing: {choice[1].describe()}; validation AP "
                + ", ".join(f"{s} / {p}: {ap:.3f}" for (s, p), ap in choice[2].items()))  # fmt: skip
            print(table(f"{contrast} fold {fold.name}: train {' + '.join(fold.train)}; validation {fold.validation}; "
                        f"nested choice: {chosen}", items))  # fmt: skip
            if extra:
                print(table(f"{contrast} fold {fold.name} model, extra test patients ({args.extra_test})",
                            score_fold(args, contrast, fold, models, extra, args.extra_test, "_extra")[0]))  # fmt: skip
        if len(folds) == N_FOLDS:
            print(
                table(
                    f"{contrast}: all 12 patients, each scored by the model of the fold that tested it",
                    pooled,
                )
            )
        for start in args.starts:
            for fold in folds:
                print("-", model_record(model_path(args.work, contrast, start, fold)))
        if args.channel_maps and contrast in MULTI:
            channel_diagnostic(args, contrast, folds, models)
        print()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=WORK,
        help="models, maps and logs (default: the user cache folder, %(default)s)",
    )
    parser.add_argument("--brats", type=Path, default=BRATS, help="the BraTS 2018 folder")
    parser.add_argument("--contrasts", nargs="+", default=["T1", *TRAINED], choices=[*SUFFIX, *MULTI])
    parser.add_argument("--folds", nargs="+", default=[str(k + 1) for k in range(N_FOLDS)])
    parser.add_argument(
        "--starts",
        nargs="+",
        default=[*STARTS, BERDIFF],
        choices=[*STARTS, BERDIFF],
        help="DISYRE's starts and the Bernoulli diffusion model (berdiff) to train and score (default: all)",
    )
    parser.add_argument("--train-only", action="store_true", help="train the models, print no tables")
    parser.add_argument("--evaluate-only", action="store_true", help="train nothing; score what is finished")
    parser.add_argument(
        "--extra-test", type=Path, help="more patients in the same layout, scored by every fold"
    )
    parser.add_argument(
        "--channel-maps",
        action="store_true",
        help="also score each contrast's map of the several-contrast t1init models alone (a post-hoc diagnostic)",
    )
    parser.add_argument(
        "--smoke-steps",
        type=int,
        help="train fold 1 of each asked configuration for N steps into <work>/smoke",
    )
    args = parser.parse_args()
    if not args.brats.is_dir():
        print(f"skipped: {args.brats} is absent (the BraTS scans live in ../shared, never in the repository)")
        return 0
    folds = [f for f in make_folds(patients_in(args.brats)) if f.name in args.folds]
    args.work.mkdir(parents=True, exist_ok=True)
    if args.smoke_steps:
        for contrast in (c for c in args.contrasts if c in TRAINED or c in MULTI):
            started = time.time()
            train(
                args.work / "smoke",
                args.brats,
                contrast,
                NESTED_STARTS[contrast][-1],
                folds[0],
                args.smoke_steps,
            )
            print(
                f"smoke {contrast} fold {folds[0].name}: {args.smoke_steps} steps, {time.time() - started:.0f} s"
            )
        return 0
    if not args.evaluate_only:
        for contrast in (c for c in args.contrasts if c in TRAINED or c in MULTI):
            for start in (s for s in args.starts if trains(contrast, s)):
                for fold in folds:
                    started = time.time()
                    train(args.work, args.brats, contrast, start, fold)
                    print(f"{contrast} {start} fold {fold.name}: {time.time() - started:.0f} s", flush=True)
    if args.train_only:
        return 0
    report(args, folds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
