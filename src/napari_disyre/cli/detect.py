"""``napari-disyre detect``: anomaly maps and masks for one scan or a cohort."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import DisyreError, InputError, OutputExistsError
from .common import (
    add_checkpoint_option,
    add_postprocessing_options,
    add_restoration_options,
    open_checkpoint,
    postprocessing_options,
    progress_bar,
    restoration_settings,
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "detect",
        help="detect anomalies in scans",
        description="Restore each scan with a checkpoint (DISYRE or masked Bernoulli diffusion) and write "
        "its anomaly map (float32) and "
        "mask (uint8) as NIfTI on the scan's own voxel grid. Give one scan with --out-map/--out-mask, or "
        "several scans or folders with --out-dir.",
    )
    parser.add_argument("scans", nargs="+", type=Path, metavar="SCAN", help="NIfTI scans or folders of them")
    add_checkpoint_option(parser)
    parser.add_argument("--mask", type=Path, default=None, help="brain mask of the (single) scan")
    out = parser.add_argument_group("outputs")
    out.add_argument("--out-map", type=Path, default=None, help="anomaly map (single scan)")
    out.add_argument("--out-mask", type=Path, default=None, help="thresholded mask (single scan)")
    out.add_argument(
        "--out-restorations", type=Path, default=None, help="4D NIfTI of the per-step restorations"
    )
    out.add_argument(
        "--out-flip-mask",
        type=Path,
        default=None,
        help="berdiff checkpoints: the flip mask (fraction of latent bits flipped, per voxel; single scan)",
    )
    out.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="folder for <scan>_anomaly_map.nii.gz and <scan>_anomaly_mask.nii.gz, and with a berdiff "
        "checkpoint <scan>_flip_mask.nii.gz (any number of scans)",
    )
    out.add_argument("--overwrite", action="store_true", help="replace existing output files")
    out.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip scans whose outputs all exist (to resume an interrupted cohort, shard or torchrun job)",
    )
    out.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="run only shard K (0-based) of N of the scans, e.g. --shard $SLURM_ARRAY_TASK_ID/8; under "
        "torchrun the ranks split the scans (and a --shard) with no scan done twice",
    )
    post = parser.add_argument_group("segmentation")
    post.add_argument(
        "--threshold",
        default="auto",
        help="score threshold, or 'auto': the checkpoint's healthy 99.9th percentile "
        "(else this scan's 99th brain percentile)",
    )
    post.add_argument("--min-size", type=int, default=0, help="drop components smaller than this many voxels")
    add_postprocessing_options(parser)
    add_restoration_options(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or lesion table")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Job:
    scan: Path
    out_map: Path | None
    out_mask: Path | None
    out_restorations: Path | None
    out_flip_mask: Path | None = None

    @property
    def outputs(self) -> list[Path]:
        return [
            p
            for p in (self.out_map, self.out_mask, self.out_restorations, self.out_flip_mask)
            if p is not None
        ]


def run(args: argparse.Namespace) -> int:
    from ..detection.sharding import agree_on_failures, rank_device, resolve_shard
    from ..outputs import check_writable, refuse_clashes, refuse_existing

    shard = resolve_shard(args.shard)
    everything = plan_jobs(args, _checkpoint_kind(args.checkpoint))
    inputs = [job.scan for job in everything] + ([args.mask] if args.mask else [])
    refuse_clashes([p for job in everything for p in job.outputs], inputs)
    jobs = shard.take(everything)
    finished = [job for job in jobs if args.skip_existing and _finished(job)]
    jobs = [job for job in jobs if job not in finished]
    checked: set[Path] = set()
    for job in jobs:
        for path in job.outputs:
            try:
                refuse_existing(path, args.overwrite)
            except OutputExistsError as exc:
                hint = " To finish an interrupted run instead, add --skip-existing." if len(jobs) > 1 else ""
                raise OutputExistsError(f"{exc}{hint}") from None
            if path.parent not in checked:  # one probe per folder, not per file
                check_writable(path)
                checked.add(path.parent)
    if not jobs:
        print("every scan's outputs exist already: nothing to do.", file=sys.stderr)
        return 2 if agree_on_failures(0) else 0  # torchrun: every rank still takes part in the vote
    args.device = rank_device(args.device)
    checkpoint = open_checkpoint(args.checkpoint)
    settings = restoration_settings(args, checkpoint)
    if not args.quiet:
        print(checkpoint.summary(), file=sys.stderr)
        if shard.count > 1 or finished:
            print(
                f"{shard.describe()}: {len(jobs)} scan(s) to run, {len(finished)} with finished outputs skipped",
                file=sys.stderr,
            )
    failures, done = [], 0
    try:
        for done, (job, scan) in enumerate(_loaded_ahead(jobs)):  # noqa: B007 (read after an interruption)
            try:
                detect_one(job, checkpoint, settings, args, scan.result())
            except DisyreError as exc:
                if len(everything) == 1:
                    raise
                failures.append(f"{job.scan}: {exc}")
                print(f"skipped {job.scan}: {exc}", file=sys.stderr)
    except KeyboardInterrupt as exc:
        exc.args = (  # the advice replaces the message; the class (Ctrl-C or SIGTERM) is kept
            f"interrupted during {jobs[done].scan} ({done} of {len(jobs)} scans finished); no partial file "
            "is left. Rerun the same command with --skip-existing to keep the finished outputs and do the rest.",
        )
        raise
    if failures:
        print(f"{len(failures)} of {len(jobs)} scans failed:\n  " + "\n  ".join(failures), file=sys.stderr)
    return 2 if agree_on_failures(len(failures)) else 0


def _finished(job: Job) -> bool:
    """All of the job's outputs exist (written atomically, so an existing file is a complete one)."""
    return all(p.exists() for p in job.outputs)


def _loaded_ahead(jobs: list[Job]):
    """Yield ``(job, future scan)``, reading the next scan from disk while the current one is restored."""
    from concurrent.futures import ThreadPoolExecutor

    from ..scans.nifti import load_scan

    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = [reader.submit(load_scan, job.scan) for job in jobs[:1]]
        for i, job in enumerate(jobs):
            if i + 1 < len(jobs):
                pending.append(reader.submit(load_scan, jobs[i + 1].scan))
            yield job, pending[i]


def _checkpoint_kind(path: Path | None) -> str:
    from ..detection.detectors import checkpoint_kind
    from ..sample_data import demo_checkpoint_path

    return checkpoint_kind(path if path is not None else demo_checkpoint_path())


def plan_jobs(args: argparse.Namespace, kind: str = "disyre") -> list[Job]:
    """Which scans to run and where each output goes; refuses ambiguous combinations early."""
    if args.out_flip_mask is not None and kind != "berdiff":
        raise InputError("--out-flip-mask needs a masked Bernoulli diffusion (berdiff) checkpoint.")
    from ..scans.nifti import is_nifti_path

    scans: list[Path] = []
    for item in args.scans:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and is_nifti_path(p))
            if not found:
                raise InputError(f"{item}: no .nii or .nii.gz file in this folder.")
            scans.extend(found)
        else:
            scans.append(item)
    single = len(scans) == 1 and not args.scans[0].is_dir()
    if not single:
        if args.out_dir is None:
            raise InputError("several scans were given: write their outputs with --out-dir DIR.")
        if args.out_map or args.out_mask or args.out_restorations or args.out_flip_mask or args.mask:
            raise InputError(
                "--out-map, --out-mask, --out-restorations, --out-flip-mask and --mask name one scan's files; "
                "with several scans use --out-dir."
            )
    elif args.out_dir is None and args.out_map is None and args.out_mask is None:
        raise InputError("say where to write the results: --out-map and/or --out-mask, or --out-dir.")
    jobs = []
    for scan, stem in zip(scans, _distinct_names(scans, args.quiet), strict=True):
        if args.out_dir is not None:
            jobs.append(
                Job(
                    scan,
                    args.out_dir / f"{stem}_anomaly_map.nii.gz",
                    args.out_dir / f"{stem}_anomaly_mask.nii.gz",
                    args.out_dir / f"{stem}_restorations.nii.gz" if args.out_restorations else None,
                    args.out_dir / f"{stem}_flip_mask.nii.gz" if kind == "berdiff" else None,
                )
            )
        else:
            jobs.append(Job(scan, args.out_map, args.out_mask, args.out_restorations, args.out_flip_mask))
    return jobs


def _distinct_names(scans: list[Path], quiet: bool) -> list[str]:
    """Output stems, one per scan: the file name, prefixed by as many parent folders as it takes to
    tell apart scans of the same name (``a/T1.nii.gz``, ``b/T1.nii.gz``: ``a_T1``, ``b_T1``), so that
    no scan's outputs replace another's. A file given twice is refused."""
    from collections import Counter

    from ..scans.nifti import strip_nifti_extension

    real = [Path(os.path.realpath(s)) for s in scans]
    if len(set(real)) < len(real):
        twice = [s for s, r in zip(scans, real, strict=True) if real.count(r) > 1]
        raise InputError(f"{twice[0]}: this scan is given more than once ({', '.join(map(str, twice))}).")
    stems = [strip_nifti_extension(s.name) for s in scans]
    parents = [r.parent.parts[1:] for r in real]
    names = list(stems)
    for depth in range(1, max(len(p) for p in parents) + 1):
        counts = Counter(names)
        if max(counts.values()) == 1:
            break
        names = [
            "_".join([*parents[i][-depth:], stems[i]]) if counts[name] > 1 else name
            for i, name in enumerate(names)
        ]
    if max(Counter(names).values()) > 1:
        raise InputError("several scans would get outputs of the same name; give them distinct file names.")
    if names != stems and not quiet:
        print("scans share file names: their outputs are named after their folders (" + ", ".join(
            n for n, s in zip(names, stems, strict=True) if n != s) + ")", file=sys.stderr)  # fmt: skip
    return names


def detect_one(job: Job, checkpoint, settings, args: argparse.Namespace, scan=None) -> None:
    """Detect one scan (``scan``: the job's scan already loaded, else read here) and write its outputs."""
    import numpy as np

    from ..detection.detectors import describe_settings
    from ..detection.pipeline import iter_detect
    from ..detection.postprocess import lesion_table, threshold_mask
    from ..restoration import run_to_end
    from ..scans.nifti import load_matching, load_scan, save_stack, save_volume

    scan = scan if scan is not None else load_scan(job.scan)
    brain = load_matching(args.mask, scan, what="brain mask") if args.mask else None
    bar = progress_bar(100, scan.name, args.quiet)

    def advance(progress) -> None:
        bar.n = round(100 * progress.fraction)
        bar.set_postfix_str(progress.describe())
        bar.refresh()

    generator = iter_detect(
        scan,
        checkpoint,
        settings,
        brain_mask=brain,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        keep_restorations=job.out_restorations is not None,
        crop=not args.no_crop,
        compile=args.compile,
    )
    result = run_to_end(generator, advance)
    bar.close()
    anomaly = postprocessing_options(args, checkpoint).apply(result.anomaly_map, result.foreground)
    threshold = result.suggested_threshold if str(args.threshold) == "auto" else _threshold(args.threshold)
    mask = threshold_mask(anomaly, threshold, min_size=args.min_size, region=result.foreground)
    if job.out_map is not None:
        save_volume(job.out_map, anomaly, scan, kind="map", overwrite=args.overwrite)
    if job.out_mask is not None:
        save_volume(job.out_mask, mask, scan, kind="mask", overwrite=args.overwrite)
    if job.out_restorations is not None:
        save_stack(job.out_restorations, np.stack(result.restorations), scan, overwrite=args.overwrite)
    if job.out_flip_mask is not None:
        save_volume(job.out_flip_mask, result.flip_mask, scan, kind="map", overwrite=args.overwrite)
    if not args.quiet:
        lesions = lesion_table(mask, anomaly, scan.affine)
        print(
            f"{scan.name}: {result.seconds:.1f} s on {result.device} (batch {result.batch_size}), "
            f"{describe_settings(settings)}, threshold {threshold:.4f}: {len(lesions)} component(s), "
            f"{sum(les.volume_ml for les in lesions):.2f} mL",
            file=sys.stderr,
        )
        for lesion in lesions[:10]:
            x, y, z = lesion.centroid_world
            print(
                f"  #{lesion.label}: {lesion.volume_ml:.2f} mL, peak {lesion.peak_score:.3f}, "
                f"centre ({x:.1f}, {y:.1f}, {z:.1f}) mm",
                file=sys.stderr,
            )


def _threshold(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--threshold must be a number or 'auto', not {text!r}") from None
