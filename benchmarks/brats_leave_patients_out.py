"""Train and evaluate FLAIR and T1c models on BraTS 2013, leave-patients-out, both folds.

Each model is trained with ``napari-disyre train`` on the tumour-free axial slices of two patients
and evaluated with ``napari-disyre evaluate`` on the two others; then the folds swap. The intensity
baseline is computed by the same evaluate command on the same voxels. Each score is also pooled over
all four patients, each scored by the fold model that never saw it (the issue states the intensity
baseline pooled over patients). Finally the FLAIR model's map and the FLAIR intensity are combined
(mean of their within-brain ranks) to see what each adds. The T1c models are also scored on the
tumour core alone (labels 1, 3, 4), the part of the tumour T1c shows.

The scans stay in ../shared (research licence); models and reports go under --work (not committed).
Prints the README's Markdown table. Run from the repository root:

    python benchmarks/brats_leave_patients_out.py --steps 1500
    python benchmarks/brats_leave_patients_out.py --contrasts T1c --steps 1000 --init T1_MODEL

``--init`` starts every model from a trained checkpoint instead of random weights: for T1c, the
healthy T1 model, since T1c looks like T1 plus enhancement and healthy T1 brains are plentiful
while two patients' tumour-free T1c slices are few.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

BRATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats2013"
NAPARI_DISYRE = [sys.executable, "-m", "napari_disyre.cli"]  # works without the console script too
FOLDS = {
    "A": (("pat0001", "pat0002"), ("pat0005", "pat0006")),
    "B": (("pat0005", "pat0006"), ("pat0001", "pat0002")),
}
CONTRASTS = {"FLAIR": "Flair_subtrMeanDivStd.nii.gz", "T1c": "T1c_subtrMeanDivStd.nii.gz"}
MASK, LABEL = "brainmask.nii.gz", "OTMultiClass.nii.gz"
CORE_LABELS = (1, 3, 4)  # BraTS tumour core; 2 is the oedema, bright on FLAIR, barely visible on T1c


def folder(patient: str) -> str:
    return f"brats_2013_{patient}_1"


def run(arguments: list[str]) -> None:
    """Run a napari-disyre command, echoing it."""
    print("$ napari-disyre", " ".join(arguments), flush=True)
    subprocess.run([*NAPARI_DISYRE, *arguments], check=True)


def _last_log_row(model: Path) -> dict[str, str]:
    """The last row of the model's training log (step, loss, ..., elapsed_s); empty when none."""
    log = model / "training" / "log.csv"
    rows = list(csv.DictReader(log.read_text().splitlines())) if log.exists() else []
    return rows[-1] if rows else {}


def train_command(
    contrast: str,
    fold: str,
    brats: Path,
    out: Path,
    steps: int,
    batch_size: int | None = None,
    init: Path | None = None,
) -> list[str]:
    """The ``napari-disyre train`` arguments of one model: tumour-free slices of the fold's
    training patients (the GPU driver, ``train_on_gpu.py``, runs the same command). With ``init``
    the model starts from that checkpoint (e.g. the healthy T1 model for T1c) instead of from
    random weights."""
    train_patients, _ = FOLDS[fold]
    glob = "brats_2013_pat000[" + "".join(p[-1] for p in train_patients) + "]_1/" + CONTRASTS[contrast]
    return [
        "train", str(brats), "--out", str(out), "--preset", "small",
        "--steps", str(steps), "--ema", "--pattern", glob, "--mask-name", MASK,
        "--exclude-label-name", LABEL, "--val-count", "0",
        "--description", f"BraTS 2013 {contrast}, tumour-free slices of {' + '.join(train_patients)}"
        + (f"; fine-tuned from {init}" if init else ""),
    ] + (["--batch-size", str(batch_size)] if batch_size else []) + (
        ["--init", str(init)] if init else [])  # fmt: skip


def train(contrast: str, fold: str, args: argparse.Namespace) -> Path:
    out = args.work / f"{contrast}_fold{fold}"
    if args.evaluate_only:
        return out  # trained elsewhere (train_on_gpu.py)
    if int(_last_log_row(out).get("step", 0)) >= args.steps:
        return out  # finished earlier
    command = train_command(contrast, fold, args.brats, out, args.steps, init=args.init)
    if (out / "training" / "state.pt").exists():
        command.append("--resume")  # an interrupted run
    run(command)
    return out


def evaluate(contrast: str, fold: str, model: Path, args: argparse.Namespace, core: bool = False) -> dict:
    """Evaluate on the fold's test patients: whole tumour (label > 0), or with ``core`` the tumour
    core only (labels 1, 3, 4: necrosis, non-enhancing and enhancing tumour), what T1c shows."""
    _, test_patients = FOLDS[fold]
    report = args.work / f"report_{contrast}{'_core' if core else ''}_fold{fold}"
    if not (report / "metrics.json").exists():
        pairs = args.work / f"pairs_{contrast}_fold{fold}.csv"
        rows = ["scan,label,brain_mask"] + [
            ",".join(str(args.brats / folder(p) / name) for name in (CONTRASTS[contrast], LABEL, MASK))
            for p in test_patients
        ]
        pairs.write_text("\n".join(rows) + "\n")
        run([
            "evaluate", "--checkpoint", str(model), "--pairs", str(pairs),
            "--steps", str(args.eval_steps), "--baselines", "intensity", "--combine",
            "--out", str(report), "--note", f"train {'+'.join(FOLDS[fold][0])}, test {'+'.join(test_patients)}",
            "--maps", str(args.work / f"maps_{contrast}_fold{fold}"),
        ] + (["--label-values", ",".join(map(str, CORE_LABELS))] if core else []))  # fmt: skip
    return json.loads((report / "metrics.json").read_text())


def pooled_over_folds(contrast: str, args: argparse.Namespace, core: bool = False) -> dict:
    """DISYRE and intensity metrics pooled over all four patients, each scored by the fold model that
    never saw it (its saved S map), on the voxels the evaluate command counts: the issue states the
    intensity baseline pooled over patients."""
    from napari_disyre.evaluation.cases import Case
    from napari_disyre.evaluation.scoring import load_case, score_case, summarise

    scored = []
    for fold, (_, test_patients) in FOLDS.items():
        maps = args.work / f"maps_{contrast}_fold{fold}"
        for patient in test_patients:
            scans = args.brats / folder(patient)
            case = Case(folder(patient), scans / CONTRASTS[contrast], scans / LABEL, scans / MASK)
            loaded = load_case(case, CORE_LABELS if core else None)
            scored.append(score_case(loaded, steps=[args.eval_steps], maps_dir=maps))
    return {
        summary.name: {
            "ap": summary.pooled.ap,
            "best_dice": summary.pooled.best_dice,
            "auroc": summary.pooled.auroc,
        }
        for summary in summarise(scored)
    }


def _device(model: Path) -> str:
    """Where the model was trained, as its checkpoint records it."""
    training = json.loads((model / "disyre.json").read_text()).get("training", {})
    return f"{training.get('device', '?')} ({training.get('machine', '?')})"


def table(results: dict[tuple[str, str], dict], models: dict[tuple[str, str], Path]) -> str:
    lines = [
        "| contrast: lesion | split (train → test) | score | AP | best Dice | AUROC |",
        "|---|---|---|---|---|---|",
    ]
    for (contrast, fold), result in results.items():
        if fold == "pooled":
            split = "all four, each scored by the model that never saw it"
        else:
            train_patients, test_patients = FOLDS[fold]
            split = f"{'+'.join(train_patients)} → {'+'.join(test_patients)}"
        for name, pooled in result["pooled"].items():
            lines.append(
                f"| {contrast} | {split} | {name} | {pooled['ap']:.3f} | {pooled['best_dice']:.3f} "
                f"| {pooled['auroc']:.3f} |"
            )
    timing = ", ".join(
        f"{c} fold {f}: {float(_last_log_row(m)['elapsed_s']) / 60:.0f} min on {_device(m)}"
        for (c, f), m in models.items()
    )
    return "\n".join(lines) + f"\n\nTraining wall time (from each model's training log): {timing}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work", type=Path, default=Path("runs/brats"), help="models and reports (not committed)"
    )
    parser.add_argument("--steps", type=int, default=1500, help="training steps per model")
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start each model from this checkpoint (default: random weights)",
    )
    parser.add_argument("--eval-steps", type=int, default=4, help="restoration steps S at evaluation")
    parser.add_argument("--contrasts", nargs="+", default=list(CONTRASTS), choices=list(CONTRASTS))
    parser.add_argument("--folds", nargs="+", default=list(FOLDS), choices=list(FOLDS))
    parser.add_argument("--brats", type=Path, default=BRATS, help="the BraTS 2013 folder")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument(
        "--evaluate-only", action="store_true", help="use the models already in --work as they are"
    )
    args = parser.parse_args()
    if not args.brats.is_dir():
        print(f"skipped: {args.brats} is absent (the BraTS scans live in ../shared, never in the repository)")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    models, results = {}, {}
    for contrast in args.contrasts:
        for fold in args.folds:
            model = models[contrast, fold] = train(contrast, fold, args)
            if not args.train_only:
                results[f"{contrast}: whole tumour", fold] = evaluate(contrast, fold, model, args)
                if contrast == "T1c":
                    results["T1c: tumour core", fold] = evaluate(contrast, fold, model, args, core=True)
    if not args.train_only and set(args.folds) == set(FOLDS):
        for contrast in args.contrasts:
            results[f"{contrast}: whole tumour", "pooled"] = {"pooled": pooled_over_folds(contrast, args)}
            if contrast == "T1c":
                results["T1c: tumour core", "pooled"] = {
                    "pooled": pooled_over_folds(contrast, args, core=True)
                }
    if results:
        print(table(results, models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
