"""The masked Bernoulli diffusion map against the autoencoder's own reconstruction (issue 29).

Pre-registered in benchmarks/brats2018_PREREGISTERED.md (2026-12-04 09:25 UTC) before this map was
computed for any patient. The official map compares the restoration with the input (x̂ − x); with an
autoencoder that fails its gate, that is mostly the autoencoder's own error. ``--map-reference
reconstruction`` compares it with the decoded code the restoration started from (x̂ − D(c)).

For each of the three four-contrast fold models of ``brats2018.py --starts berdiff`` (none retrained),
the reference with the higher AP on the fold's validation patient (ties: the official one) scores
the fold's test patients; printed: each fold, the nested AP pooled over the 12 patients and both
references unnested, beside z-scored intensity. Then the fold-1 variants of ``berdiff_variants.py``
with the reconstruction reference on fold 1's test patients (reported, never selected).

Maps are cached beside those of ``brats2018.py`` (``<model>/..._berdiff_recon_anomaly_map.nii.gz``
for the new one). Run from the repository root::

    python benchmarks/berdiff_map_reference.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import berdiff_variants as v  # noqa: E402  (the fold-1 variants and their model folders)
import brats2018 as b  # noqa: E402  (the folds, data folders, scoring and tables of the main benchmark)

from napari_disyre.evaluation.metrics import average_precision  # noqa: E402
from napari_disyre.validation import MAP_REFERENCES  # noqa: E402

REFERENCES = MAP_REFERENCES  # the official map first
NAMES = {"input": "Bernoulli diffusion, map vs input (official)", "reconstruction": "Bernoulli diffusion, map vs reconstruction"}  # fmt: skip
NESTED = "Bernoulli diffusion, nested reference"


def choose_reference(validation_ap: dict[str, float]) -> str:
    """The reference with the higher validation AP; the official one unless the other beats it."""
    return max(REFERENCES, key=lambda reference: (validation_ap[reference], reference == "input"))


def score_references(item: b.Patient, model: Path, work: Path, models: b.Models) -> None:
    """Both maps of ``model`` on ``item``, under :data:`NAMES`."""
    for reference in REFERENCES:
        models.score(item, NAMES[reference], model, work / "maps" / model.name, reference=reference)


def fold_rows(args, fold: b.Fold, models: b.Models) -> tuple[list[b.Patient], str, dict[str, float]]:
    """The fold model's both maps and the nested one on the fold's test patients; the choice and
    the validation APs it was made on."""
    model = b.model_path(args.work, v.CONTRAST, b.BERDIFF, fold)
    validation = b.load_patient(args.brats, fold.validation, v.CONTRAST)
    score_references(validation, model, args.work, models)
    aps = {
        r: average_precision(validation.scores[NAMES[r]], validation.label, validation.region)
        for r in REFERENCES
    }
    chosen = choose_reference(aps)
    items = []
    for patient in fold.test:
        item = b.load_patient(args.brats, patient, v.CONTRAST)
        score_references(item, model, args.work, models)
        item.scores[NESTED] = item.scores[NAMES[chosen]]
        item.seconds[NESTED] = item.seconds[NAMES[chosen]]
        items.append(item)
    return items, chosen, aps


def variant_rows(args, fold: b.Fold, models: b.Models) -> list[b.Patient]:
    """Fold 1's test patients: the fold-1 model and each trained variant, both maps."""
    runs = [("fold-1 model", b.model_path(args.work, v.CONTRAST, b.BERDIFF, fold))]
    runs += [(f"variant {name}", v.variant_path(args.work, fold, name)) for name in v.VARIANTS]
    runs = [(name, model) for name, model in runs if v.is_trained(model, name.removeprefix("variant "))]
    items = []
    for patient in fold.test:
        item = b.load_patient(args.brats, patient, v.CONTRAST)
        for name, model in runs:
            for reference in REFERENCES:
                key = f"{name}, vs {reference}"
                models.score(item, key, model, args.work / "maps" / model.name, reference=reference)
        items.append(item)
    return items


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=b.WORK, help="as brats2018.py (default: %(default)s)")
    parser.add_argument("--brats", type=Path, default=b.BRATS, help="the BraTS 2018 folder")
    args = parser.parse_args()
    if not args.brats.is_dir():
        print(f"skipped: {args.brats} is absent (the BraTS scans live in ../shared, never in the repository)")
        return 0
    folds = b.make_folds(b.patients_in(args.brats))
    unfinished = [
        f.name for f in folds if not b.is_finished(b.model_path(args.work, v.CONTRAST, b.BERDIFF, f))
    ]
    if unfinished:
        raise SystemExit(
            f"fold model(s) {', '.join(unfinished)} not trained: run brats2018.py --starts berdiff first"
        )
    models, pooled = b.Models(), []
    for fold in folds:
        items, chosen, aps = fold_rows(args, fold, models)
        pooled += items
        tried = ", ".join(f"{r}: {ap:.3f}" for r, ap in aps.items())
        print(b.table(f"{v.CONTRAST} fold {fold.name}; validation {fold.validation} AP {tried}; nested choice: {chosen}", items))  # fmt: skip
    print(
        b.table(f"{v.CONTRAST}: all 12 patients, each scored by the model of the fold that tested it", pooled)
    )
    print(b.table(f"{v.CONTRAST} fold-1 model and variants, both maps, fold 1 test patients (reported, never selected)",
                  variant_rows(args, folds[0], models)))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
