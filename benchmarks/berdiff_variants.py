"""Masked Bernoulli diffusion variants on BraTS 2018 fold 1 (issue 29): longer latent training, the
paper's code size, the paper's symmetric forward process, a longer-trained autoencoder, each one
change from the fold-1 model of ``brats2018.py --contrasts FLAIR+T1+T1ce+T2 --starts berdiff``.

Pre-registered in benchmarks/brats2018_PREREGISTERED.md (2026-12-04 03:26 UTC) before any variant was
trained. Fold 1 only (one variant is one to one and a half hours of a CPU core); scored on fold 1's
four test patients beside the fold-1 model and z-scored FLAIR intensity; reported, never selected.

- ``longer``: the fold-1 model copied and continued with ``--resume --diffusion-steps 8000`` (the
  autoencoder, so the code, unchanged; the latent UNet trained twice as long);
- ``code128``: trained afresh with ``--code-size 128`` (the small preset has 32 bits per position);
- ``symmetric``: trained afresh with ``--forward-process symmetric``;
- ``ae8000``: trained afresh with ``--ae-steps 8000`` (four times the preset's autoencoder steps;
  pre-registered later, 2026-12-04 09:36 UTC, after the autoencoder was found to underfit).

Resumable like ``brats2018.py``: a rerun skips finished variants and continues interrupted ones.
Run from the repository root::

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/berdiff_variants.py --train-only
    python benchmarks/berdiff_variants.py --evaluate-only
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import brats2018 as b  # noqa: E402  (the folds, data folders, commands and tables of the main benchmark)

CONTRAST = "FLAIR+T1+T1ce+T2"
LONGER_STEPS = 8000
# variant: (the options it adds to the fold-1 command, whether it continues the fold-1 model)
VARIANTS: dict[str, tuple[list[str], bool]] = {
    "longer": (["--diffusion-steps", str(LONGER_STEPS)], True),
    "code128": (["--code-size", "128"], False),
    "symmetric": (["--forward-process", "symmetric"], False),
    "ae8000": (["--ae-steps", "8000"], False),
}


def variant_path(work: Path, fold: b.Fold, variant: str) -> Path:
    base = b.model_path(work, CONTRAST, b.BERDIFF, fold)
    return base.with_name(f"{base.name}_{variant}")


def is_trained(model: Path, variant: str) -> bool:
    """Finished, and (``longer``) after its own step count rather than the copied model's."""
    if not b.is_finished(model):
        return False
    steps = json.loads(b.metadata_file(model).read_text())["training"]["diffusion_steps"]
    return variant != "longer" or int(steps) >= LONGER_STEPS


def train_variant(work: Path, brats: Path, fold: b.Fold, variant: str) -> None:
    """Train (or continue) one variant unless it is trained."""
    model = variant_path(work, fold, variant)
    if is_trained(model, variant):
        print(f"finished earlier: {model}", flush=True)
        return
    extra, continues = VARIANTS[variant]
    base = b.model_path(work, CONTRAST, b.BERDIFF, fold)
    if continues and not model.exists():
        if not b.is_finished(base):
            raise SystemExit(
                f"{variant}: the fold-{fold.name} model {base} is not trained yet; train it first."
            )
        shutil.copytree(base, model)  # the copy continues; the pre-registered model stays as it is
    command = b.training_command(work, brats, CONTRAST, b.BERDIFF, fold, model)
    description = command.index("--description") + 1
    command[description] = f"{command[description]}; variant {variant} ({' '.join(extra)})"
    resume = ["--resume"] if continues else b.continue_or_start(model)
    b.run_cli(command + extra + resume)


def training_gates(model: Path, data: Path) -> dict:
    """The quality gates measured on (up to 256 of) the run's own training slices, with the same
    fixed noise as on the held-out ones: the autoencoder's error there says whether it underfits
    (high on both) or does not generalise (low here, high held out)."""
    from napari_disyre.berdiff.checkpoint import load_berdiff
    from napari_disyre.berdiff.gates import QualityGates, judge_run
    from napari_disyre.berdiff.run import BerDiffRunConfig
    from napari_disyre.berdiff.stage_data import square_slices
    from napari_disyre.cli.train import find_contrast_scans
    from napari_disyre.training.dataset import SliceBank

    trained = load_berdiff(model)
    scans = find_contrast_scans(data, b.channel_files(CONTRAST), None, "seg.nii.gz")
    bank = SliceBank.from_scans(scans, BerDiffRunConfig(preset=b.PRESET).preprocessing())
    images = square_slices(bank.slices, trained.autoencoder.config.image_size)
    return judge_run(trained, images, QualityGates()).to_dict()


def report(args, fold: b.Fold) -> None:
    """Fold 1's test patients: the fold-1 model, each trained variant, z-scored FLAIR intensity."""
    models = b.Models()
    items = []
    base = b.model_path(args.work, CONTRAST, b.BERDIFF, fold)
    runs = [("Bernoulli diffusion (fold-1 model)", base)] if b.is_finished(base) else []
    trained = {v: is_trained(variant_path(args.work, fold, v), v) for v in args.variants}
    runs += [(f"variant {v}", variant_path(args.work, fold, v)) for v in args.variants if trained[v]]
    for patient in fold.test:
        item = b.load_patient(args.brats, patient, CONTRAST)
        for name, model in runs:
            models.score(item, name, model, args.work / "maps" / model.name)
        items.append(item)
    print(b.table(f"{CONTRAST} Bernoulli diffusion variants, fold {fold.name} test patients", items))
    data = b.training_folder(args.work, args.brats, CONTRAST, b.BERDIFF, fold)
    for name, model in runs:
        gates = json.loads(b.metadata_file(model).read_text())["training"].get("quality_gates", {})
        own = training_gates(model, data)
        print(f"- {name}: {b.model_record(model)}; gates {'passed' if gates.get('passed') else 'FAILED'}: "
              f"autoencoder error held out {gates.get('ae_error', float('nan')):.4f} / on its training slices "
              f"{own['ae_error']:.4f}; latent UNet held out {gates.get('unet_bits', float('nan')):.4f} vs trivial "
              f"{gates.get('trivial_bits', float('nan')):.4f} bits / on its training slices {own['unet_bits']:.4f} "
              f"vs {own['trivial_bits']:.4f}")  # fmt: skip
    missing = [v for v in args.variants if not trained[v]]
    if missing:
        print(f"- not trained yet: {', '.join(missing)}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=b.WORK, help="as brats2018.py (default: %(default)s)")
    parser.add_argument("--brats", type=Path, default=b.BRATS, help="the BraTS 2018 folder")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--train-only", action="store_true", help="train the variants, print no table")
    parser.add_argument("--evaluate-only", action="store_true", help="train nothing; score what is trained")
    args = parser.parse_args()
    if not args.brats.is_dir():
        print(f"skipped: {args.brats} is absent (the BraTS scans live in ../shared, never in the repository)")
        return 0
    fold = b.make_folds(b.patients_in(args.brats))[0]
    if not args.evaluate_only:
        for variant in args.variants:
            started = time.time()
            train_variant(args.work, args.brats, fold, variant)
            print(f"variant {variant}: {time.time() - started:.0f} s", flush=True)
    if not args.train_only:
        report(args, fold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
