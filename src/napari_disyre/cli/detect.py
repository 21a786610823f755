"""``napari-disyre detect``: anomaly maps and masks for one scan or a cohort."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import DisyreError, InputError
from .common import (
    add_checkpoint_option,
    add_restoration_options,
    open_checkpoint,
    progress_bar,
    restoration_settings,
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "detect",
        help="detect anomalies in scans",
        description="Restore each scan with a DISYRE checkpoint and write its anomaly map (float32) and "
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
    post = parser.add_argument_group("segmentation")
    post.add_argument(
        "--threshold",
        default="auto",
        help="score threshold, or 'auto': the checkpoint's healthy 99.9th percentile "
        "(else this scan's 99th brain percentile)",
    )
    post.add_argument("--min-size", type=int, default=0, help="drop components smaller than this many voxels")
    post.add_argument(
        "--median", type=int, default=0, help="median-filter the map with this window (voxels) first"
    )
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


def run(args: argparse.Namespace) -> int:
    from ..outputs import refuse_existing

    jobs = plan_jobs(args, _checkpoint_kind(args.checkpoint))
    for job in jobs:
        for path in (job.out_map, job.out_mask, job.out_restorations, job.out_flip_mask):
            if path is not None:
                refuse_existing(path, args.overwrite)
    checkpoint = open_checkpoint(args.checkpoint)
    settings = restoration_settings(args, checkpoint)
    if not args.quiet:
        print(checkpoint.summary(), file=sys.stderr)
    failures = []
    for job in jobs:
        try:
            detect_one(job, checkpoint, settings, args)
        except DisyreError as exc:
            if len(jobs) == 1:
                raise
            failures.append(f"{job.scan}: {exc}")
            print(f"skipped {job.scan}: {exc}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(jobs)} scans failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 2
    return 0


def _checkpoint_kind(path: Path | None) -> str:
    from ..detectors import checkpoint_kind
    from ..sample_data import demo_checkpoint_path

    return checkpoint_kind(path if path is not None else demo_checkpoint_path())


def plan_jobs(args: argparse.Namespace, kind: str = "disyre") -> list[Job]:
    """Which scans to run and where each output goes; refuses ambiguous combinations early."""
    if args.out_flip_mask is not None and kind != "berdiff":
        raise InputError("--out-flip-mask needs a masked Bernoulli diffusion (berdiff) checkpoint.")
    from ..nifti import is_nifti_path, strip_nifti_extension

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
    for scan in scans:
        if args.out_dir is not None:
            stem = strip_nifti_extension(scan.name)
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


def detect_one(job: Job, checkpoint, settings, args: argparse.Namespace) -> None:
    import numpy as np

    from ..detection import iter_detect
    from ..detectors import describe_settings
    from ..engine import run_to_end
    from ..nifti import load_matching, load_scan, save_volume
    from ..postprocess import lesion_table, smooth_map, threshold_mask

    scan = load_scan(job.scan)
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
    )
    result = run_to_end(generator, advance)
    bar.close()
    anomaly = smooth_map(result.anomaly_map, args.median)
    threshold = result.suggested_threshold if str(args.threshold) == "auto" else _threshold(args.threshold)
    mask = threshold_mask(anomaly, threshold, min_size=args.min_size, region=result.foreground)
    if job.out_map is not None:
        save_volume(job.out_map, anomaly, scan, kind="map", overwrite=args.overwrite)
    if job.out_mask is not None:
        save_volume(job.out_mask, mask, scan, kind="mask", overwrite=args.overwrite)
    if job.out_restorations is not None:
        _save_restorations(job.out_restorations, np.stack(result.restorations, axis=-1), scan, args.overwrite)
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


def _save_restorations(path: Path, stack, scan, overwrite: bool) -> None:
    """A 4D NIfTI (x, y, z, step) on the scan's grid."""
    import nibabel as nib

    from ..nifti import nifti_like
    from ..outputs import atomic_output

    image = nifti_like(stack.astype("float32"), scan, kind="image")
    with atomic_output(path, overwrite=overwrite) as tmp:
        nib.save(image, tmp)
