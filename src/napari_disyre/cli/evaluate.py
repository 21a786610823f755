"""``napari-disyre evaluate``: the paper's metrics on labelled scans, with baselines and a step sweep."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .common import (
    add_checkpoint_option,
    add_postprocessing_options,
    add_restoration_options,
    open_checkpoint,
    postprocessing_options,
    progress_bar,
    restoration_overrides,
)


def register(commands: argparse._SubParsersAction) -> None:
    from ..validation import Count, Finite, RestorationSteps, Seed, cli_list, cli_type

    parser = commands.add_parser(
        "evaluate",
        help="voxel AP, best Dice and AUROC against lesion labels",
        description="Run one or more checkpoints of either method (--checkpoint A --checkpoint B: DISYRE and "
        "masked Bernoulli diffusion side by side) and the baselines on labelled scans and report voxel-level AP, AUROC and best "
        "Dice (pooled and per volume), slice-level AUROC/AP, a precision-recall plot, a Dice-vs-threshold plot "
        "and a gallery of the worst and best slices. Labels are binarised: label > 0 is anomalous.",
    )
    add_checkpoint_option(parser, several=True)
    data = parser.add_argument_group(
        "data (one of: --scans with --labels, --scans with --scan-name, --pairs, --demo)"
    )
    data.add_argument(
        "--scans", type=Path, help="folder of scans, or of one sub-folder per case with --scan-name"
    )
    data.add_argument("--labels", type=Path, help="folder of labels named like the scans")
    data.add_argument("--brain-masks", type=Path, help="folder of brain masks named like the scans")
    data.add_argument(
        "--scan-name",
        dest="scan_names",
        action="append",
        metavar="[CONTRAST=]FILE",
        help="per-case sub-folders: file name of the scan (e.g. T1.nii.gz); several contrasts: one "
        "CONTRAST=FILE per channel of the checkpoint, e.g. --scan-name flair=flair.nii.gz --scan-name t2=t2.nii.gz",
    )
    data.add_argument("--label-name", help="per-case sub-folders: file name of the label")
    data.add_argument("--mask-name", help="per-case sub-folders: file name of the brain mask")
    data.add_argument("--pairs", type=Path, help="CSV with columns scan,label[,brain_mask][,id]")
    data.add_argument("--demo", action="store_true", help="the bundled demo scan and its ground-truth lesion")
    data.add_argument(
        "--label-values",
        type=cli_list(Count, "integers (label values of 1 or more; 0 is background)"),
        help="comma-separated label values that count as anomalous, e.g. 1,3,4 for the BraTS tumour core "
        "(default: every value > 0)",
    )
    what = parser.add_argument_group("what to compare")
    what.add_argument(
        "--sweep",
        type=cli_list(RestorationSteps, "integers (restoration step counts of 1 or more)"),
        help="DISYRE checkpoints: comma-separated step counts, e.g. 1,2,4,8 (default: --steps)",
    )
    what.add_argument(
        "--baselines",
        default="intensity,inverted-intensity",
        help="comma-separated: intensity (raw scanner values), intensity-zscore (z-scored inside the "
        "brain), inverted-intensity, inverted-intensity-zscore, or none (default: the two raw ones)",
    )
    what.add_argument(
        "--combine",
        action="store_true",
        help="also score the rank mean of each model's map and the intensity",
    )
    what.add_argument("--maps", type=Path, help="reuse DISYRE maps saved here; save new ones here")
    what.add_argument(
        "--threshold", type=cli_type(Finite), help="also report Dice, precision, recall at this threshold"
    )
    what.add_argument(
        "--sample-voxels",
        type=cli_type(Count),
        help="evaluate N random voxels per volume (official parity: 10000)",
    )
    what.add_argument("--seed", type=cli_type(Seed), default=0, help="seed of --sample-voxels")
    add_postprocessing_options(parser)
    parser.add_argument("--out", type=Path, help="report folder (metrics.csv, metrics.json, PNG plots)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    parser.add_argument("--note", default="", help="free text stored in metrics.json (e.g. the data split)")
    add_restoration_options(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _cases(args: argparse.Namespace):
    from ..evaluation.cases import Case, cases_by_name, cases_from_csv, cases_in_folders
    from ..sample_data import demo_lesion_path, demo_scan_path

    if args.demo:
        return [Case("demo", demo_scan_path(), demo_lesion_path())]
    if args.pairs:
        return cases_from_csv(args.pairs)
    if args.scans and args.scan_names:
        if not args.label_name:
            raise InputError("--scan-name needs --label-name (the label file beside each scan).")
        return cases_in_folders(args.scans, _scan_names(args.scan_names), args.label_name, args.mask_name)
    if args.scans and args.labels:
        return cases_by_name(args.scans, args.labels, args.brain_masks)
    raise InputError(
        "give the data: --scans DIR --labels DIR, or --scans DIR --scan-name F --label-name F, or --pairs CSV."
    )


def _scan_names(given: list[str]) -> str | dict[str, str]:
    """One ``--scan-name FILE`` (one contrast), or ``CONTRAST=FILE`` for each of several."""
    from .common import named_values

    if len(given) == 1 and "=" not in given[0]:
        return given[0]
    return named_values(given, "--scan-name", "FILE")


def _describe(label_values: list[int] | None) -> str:
    return "label > 0" if label_values is None else "label in {" + ", ".join(map(str, label_values)) + "}"


def _baselines(text: str) -> list[str]:
    """The --baselines names (``none``: no baseline); unknown names are refused by ``score_case``."""
    return [] if text.strip() == "none" else [b.strip() for b in text.split(",") if b.strip()]


def _check_outputs(args: argparse.Namespace) -> None:
    """Before any work: the report may not replace a folder silently, and both folders must be writable."""
    from ..outputs import check_writable, refuse_existing

    if args.out is not None:
        refuse_existing(args.out, args.overwrite)
    for folder in (args.out, args.maps):
        if folder is not None:
            check_writable(folder / "x" if folder.is_dir() else folder)


def _interruption_advice(args: argparse.Namespace) -> str:
    kept = (
        f"the maps finished so far are kept in {args.maps} and a rerun reuses them"
        if args.maps
        else "add --maps DIR to keep finished maps across interruptions"
    )
    return f"interrupted: no report was written and no partial file is left; {kept}."


def _score_one(args: argparse.Namespace, item, runs: list[ModelRun], baselines: list[str]) -> None:
    """The baselines and every model run's map (plus its intensity combination) of one case."""
    from ..evaluation.scoring import rank_combination, score_case, score_detection

    score_case(item, baselines=baselines)
    for run_ in runs:
        # fast-mode maps are not exact-mode maps: keep them apart, never reuse one for the other
        fast = args.maps is not None and getattr(run_.settings, "fast", False)
        maps_dir = args.maps / "fast" if fast else args.maps
        score_detection(
            item, run_.checkpoint, run_.settings, run_.name, run_.tag, maps_dir, run_.options,
            postprocessing=run_.postprocessing,
        )  # fmt: skip
        if args.combine:
            combined = f"{run_.name} + intensity"
            item.scores[combined] = rank_combination(item.scores[run_.name], item.scan.data, item.region)
            item.seconds[combined] = item.seconds[run_.name]


def run(args: argparse.Namespace) -> int:
    from ..detection.postprocess import bounded_by_volume
    from ..evaluation.report import format_table, write_report
    from ..evaluation.scoring import load_case, require_lesion_voxels, summarise
    from ..outputs import refuse_clashes

    _check_outputs(args)
    cases = _cases(args)
    refuse_clashes(
        [p for p in (args.out, args.maps) if p],
        [p for c in cases for p in c.inputs],
    )
    label_values = args.label_values
    baselines = _baselines(args.baselines)
    runs = _model_runs(args)
    scored = [load_case(case, label_values) for case in cases]  # every input checked before the model runs
    require_lesion_voxels(scored)
    for item, run_ in ((item, run_) for item in scored for run_ in runs):
        post = run_.postprocessing
        bounded_by_volume(
            item.scan.shape, erosion=post.erosion, median=post.median, sample_voxels=args.sample_voxels
        )
    bar = progress_bar(len(cases) * len(runs), "evaluating", args.quiet)
    try:
        for item in scored:
            bar.set_postfix_str(item.case.id)
            _score_one(args, item, runs, baselines)
            bar.update(len(runs))
    except KeyboardInterrupt as exc:
        exc.args = (_interruption_advice(args),)  # the class (Ctrl-C or SIGTERM) is kept
        raise
    bar.close()
    summaries = summarise(scored, sample=args.sample_voxels, seed=args.seed, threshold=args.threshold)
    print(
        f"{len(scored)} volume(s); labels binarised ({_describe(label_values)}); "
        f"metrics on brain-mask/foreground voxels; map post-processing: {_postprocessing_text(runs)}"
        + (
            f", {args.sample_voxels} random voxels per volume (seed {args.seed})"
            if args.sample_voxels
            else ""
        )
    )
    print(format_table(summaries))
    if args.out is not None:
        settings_record = {
            "checkpoints": list(dict.fromkeys(r.checkpoint.summary() for r in runs)),
            "models": {r.name: r.describe() for r in runs},
            "fast": any(getattr(r.settings, "fast", False) for r in runs),
            "baselines": baselines,
            "postprocessing": _postprocessing_record(runs),
            "sample_voxels": args.sample_voxels,
            "seed": args.seed,
            "anomalous_labels": _describe(label_values),
            "note": args.note,
            "command": " ".join(["napari-disyre", *sys.argv[1:]]),
        }
        write_report(args.out, summaries, scored, settings_record, overwrite=args.overwrite)
        print(f"report written to {args.out}")
    return 0


def _postprocessing_record(runs: list[ModelRun]) -> dict:
    """The map post-processing for metrics.json: one entry when every model's is the same, else per model."""
    records = {r.name: r.postprocessing.to_dict() for r in runs}
    distinct = {json.dumps(v, sort_keys=True) for v in records.values()}
    return next(iter(records.values())) if len(distinct) == 1 else records


def _postprocessing_text(runs: list[ModelRun]) -> str:
    texts = {r.name: r.postprocessing.describe() for r in runs}
    if len(set(texts.values())) == 1:
        return next(iter(texts.values()))
    return "; ".join(f"{name}: {text}" for name, text in texts.items())


@dataclass(frozen=True)
class ModelRun:
    """One model map per case: a checkpoint with its settings, the score's name and its cache tag."""

    checkpoint: object
    settings: object
    name: str
    tag: str
    options: dict
    postprocessing: object  # MapPostprocessing: the checkpoint's default, overridden by --erode/--median

    def describe(self) -> str:
        from ..detection.detectors import describe_settings

        return f"{self.checkpoint.name}: {describe_settings(self.settings)}"


def _model_runs(args: argparse.Namespace) -> list[ModelRun]:
    """Each --checkpoint (default: the demo model) with the options of its method; DISYRE ones once
    per --sweep step count. An option that fits none of the checkpoints is an error."""
    from ..detection.detectors import OPTIONS, default_settings, describe_settings
    from ..evaluation.scoring import disyre_name

    checkpoints = [open_checkpoint(path) for path in (args.checkpoint or [None])]
    given = {k: v for k, v in restoration_overrides(args).items() if v is not None}
    kinds = {c.kind for c in checkpoints}
    unused = sorted(k for k in given if not any(k in OPTIONS[kind] for kind in kinds))
    if args.sweep and "disyre" not in kinds:
        unused.append("sweep")
    if unused:
        raise InputError(
            f"{', '.join(unused)}: no checkpoint given takes this option (checkpoints: {', '.join(sorted(kinds))})."
        )
    options = {
        "device": args.device,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "crop": not args.no_crop,
        "compile": args.compile,
        "runtime": args.runtime,
    }
    several = len(checkpoints) > 1
    runs = []
    for checkpoint in checkpoints:
        settings = default_settings(
            checkpoint, **{k: v for k, v in given.items() if k in OPTIONS[checkpoint.kind]}
        )
        prefix, tag = (f"{checkpoint.name}: ", f"{_cache_key(checkpoint)}_") if several else ("", "")
        post = postprocessing_options(args, checkpoint)
        if checkpoint.kind == "berdiff":
            name = f"{prefix}BerDiff {describe_settings(settings)}"
            runs.append(
                ModelRun(
                    checkpoint,
                    settings,
                    name,
                    f"{tag}berdiff_L{settings.noise_level}_P{settings.threshold:g}"
                    + ("_recon" if settings.reference == "reconstruction" else ""),
                    options,
                    post,
                )
            )
            continue
        steps = args.sweep or [settings.steps]
        for s in steps:
            runs.append(
                ModelRun(
                    checkpoint,
                    dataclasses.replace(settings, steps=s),
                    prefix + disyre_name(s, settings.fast),
                    f"{tag}S{s}",
                    options,
                    post,
                )
            )
    return runs


def _cache_key(checkpoint) -> str:
    """Names the maps of one of several checkpoints in --maps: its folder name and a hash of its path."""
    import hashlib

    source = str(checkpoint.source.resolve()) if checkpoint.source is not None else checkpoint.name
    return f"{checkpoint.name}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"
