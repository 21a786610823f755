"""``napari-disyre detect``: anomaly maps and masks for one scan or a cohort. A model of several
contrasts takes one scan per contrast (``--scan flair=a.nii.gz --scan t2=b.nii.gz``, or ``--scans DIR
--scan-name flair='*_flair.nii.gz' ...``) and gets a map per contrast (``<map>_<contrast>.nii.gz``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import DisyreError, InputError, OutputExistsError
from ..scans.nifti import strip_nifti_extension
from .common import (
    add_checkpoint_option,
    add_postprocessing_options,
    add_restoration_options,
    distinct_names,
    open_checkpoint,
    postprocessing_options,
    progress_bar,
    restoration_settings,
)


def register(commands: argparse._SubParsersAction) -> None:
    from ..validation import Finite, Size, cli_type

    parser = commands.add_parser(
        "detect",
        help="detect anomalies in scans",
        description="Restore each scan with a checkpoint (DISYRE or masked Bernoulli diffusion) and write "
        "its anomaly map (float32) and "
        "mask (uint8) as NIfTI on the scan's own voxel grid. Give one scan with --out-map/--out-mask, or "
        "several scans or folders with --out-dir.",
    )
    parser.add_argument("scans", nargs="*", type=Path, metavar="SCAN", help="NIfTI scans or folders of them")
    add_checkpoint_option(parser)
    several = parser.add_argument_group("several contrasts (a model of several channels)")
    several.add_argument(
        "--scan",
        dest="contrast_scans",
        action="append",
        metavar="CONTRAST=PATH",
        help="one scan per contrast of the model, e.g. --scan flair=a.nii.gz --scan t2=b.nii.gz",
    )
    several.add_argument("--scans", dest="cohort", type=Path, metavar="DIR", help="cohort folder (with --scan-name)")
    several.add_argument(
        "--scan-name",
        dest="scan_names",
        action="append",
        metavar="CONTRAST=PATTERN",
        help="file-name pattern of a contrast in --scans and its sub-folders, e.g. flair='*_flair.nii.gz'",
    )
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
        type=cli_type(Finite, words=("auto",)),
        default="auto",
        help="score threshold, or 'auto': the checkpoint's healthy 99.9th percentile "
        "(else this scan's 99th brain percentile)",
    )
    post.add_argument("--min-size", type=cli_type(Size), default=0, help="drop components smaller than this many voxels")
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
    contrasts: tuple[tuple[str, Path], ...] = ()  # several contrasts: (name, scan); ``scan`` is the first
    maps_per_contrast: bool = False  # several contrasts, DISYRE: a map per contrast beside the combined one

    def per_contrast(self, path: Path | None) -> dict[str, Path]:
        """Several contrasts: ``path`` with ``_<contrast>`` before its extension, per contrast."""
        if path is None or len(self.contrasts) < 2:
            return {}
        stem = strip_nifti_extension(path.name)
        return {c: path.with_name(f"{stem}_{c}{path.name[len(stem):]}") for c, _ in self.contrasts}

    @property
    def outputs(self) -> list[Path]:
        restorations = list(self.per_contrast(self.out_restorations).values()) or [self.out_restorations]
        singles = (self.out_map, self.out_mask, *restorations, self.out_flip_mask)
        maps = self.per_contrast(self.out_map) if self.maps_per_contrast else {}
        return [p for p in singles if p is not None] + list(maps.values())

    def load(self):
        """The job's input: one Volume, or a MultiContrastScan (grids checked)."""
        from ..scans.contrasts import load_contrasts
        from ..scans.nifti import load_scan

        return load_contrasts(dict(self.contrasts)) if self.contrasts else load_scan(self.scan)


def run(args: argparse.Namespace) -> int:
    from ..detection.sharding import agree_on_failures, rank_device, resolve_shard
    from ..outputs import check_writable, refuse_clashes, refuse_existing

    shard = resolve_shard(args.shard)
    everything = plan_jobs(args, _checkpoint_kind(args.checkpoint))
    inputs = [p for job in everything for p in [job.scan, *(p for _, p in job.contrasts)]]
    inputs += [args.mask] if args.mask else []
    refuse_clashes([p for job in everything for p in job.outputs], inputs)
    jobs = shard.take(everything)
    finished = [job for job in jobs if args.skip_existing and _finished(job)]
    jobs = [_missing_only(job, args.quiet) if args.skip_existing else job for job in jobs if job not in finished]
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


def _missing_only(job: Job, quiet: bool) -> Job:
    """The job writing only its outputs that do not exist yet: an interruption between a scan's map
    and its mask leaves the map, which --skip-existing keeps (it is complete) while the scan is run
    again for the rest; nothing existing is replaced."""
    names = ("out_map", "out_mask", "out_restorations", "out_flip_mask")
    existing = {n: None for n in names if getattr(job, n) is not None and getattr(job, n).exists()}
    if existing and not quiet:
        print(f"{job.scan}: {', '.join(getattr(job, n).name for n in existing)} kept; writing the rest", file=sys.stderr)
    return dataclasses.replace(job, **existing)


def _loaded_ahead(jobs: list[Job]):
    """Yield ``(job, future scan)``, reading the next scan from disk while the current one is restored."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = [reader.submit(job.load) for job in jobs[:1]]
        for i, job in enumerate(jobs):
            if i + 1 < len(jobs):
                pending.append(reader.submit(jobs[i + 1].load))
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

    named = _contrast_inputs(args)
    scans: list[Path] = [files[0][1] for _, files in named]
    for item in args.scans:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and is_nifti_path(p))
            if not found:
                raise InputError(f"{item}: no .nii or .nii.gz file in this folder.")
            scans.extend(found)
        else:
            scans.append(item)
    single = len(scans) == 1 and args.cohort is None and not (args.scans and args.scans[0].is_dir())
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
    stems = [n for n, _ in named] if named and args.cohort else distinct_names(scans, args.quiet)
    for i, (scan, stem) in enumerate(zip(scans, stems, strict=True)):
        contrasts = named[i][1] if named else ()
        if args.out_dir is not None:
            jobs.append(
                Job(
                    scan,
                    args.out_dir / f"{stem}_anomaly_map.nii.gz",
                    args.out_dir / f"{stem}_anomaly_mask.nii.gz",
                    args.out_dir / f"{stem}_restorations.nii.gz" if args.out_restorations else None,
                    args.out_dir / f"{stem}_flip_mask.nii.gz" if kind == "berdiff" else None,
                    contrasts,
                    len(contrasts) > 1 and kind == "disyre",
                )
            )
        else:
            outputs = (args.out_map, args.out_mask, args.out_restorations, args.out_flip_mask)
            jobs.append(Job(scan, *outputs, contrasts, len(contrasts) > 1 and kind == "disyre"))
    return jobs


def _contrast_inputs(args: argparse.Namespace) -> list[tuple[str, tuple[tuple[str, Path], ...]]]:
    """The several-contrast cases asked for, ``(name, ((contrast, path), ...))`` each: the one of
    ``--scan`` options, or those ``--scan-name`` patterns find in ``--scans``; none without them."""
    from ..scans.contrasts import find_contrast_cases
    from .common import named_values

    given = named_values(args.contrast_scans, "--scan", "PATH")
    patterns = named_values(args.scan_names, "--scan-name", "PATTERN")
    if (given or patterns) and args.scans:
        raise InputError("give the scans either as plain paths or with --scan/--scans, not both.")
    if patterns and args.cohort is None or args.cohort is not None and not patterns:
        raise InputError("a cohort of several contrasts needs both --scans DIR and --scan-name CONTRAST=PATTERN.")
    if given and patterns:
        raise InputError("--scan names one case's files, --scan-name a cohort's: use one of them.")
    if not (given or patterns or args.scans):
        raise InputError("give a scan (a path, or --scan CONTRAST=PATH per contrast), or a folder.")
    if patterns:
        cases = find_contrast_cases(args.cohort, patterns)
        return [(name, tuple(files.items())) for name, files in cases.items()]
    return [("", tuple((c, Path(p)) for c, p in given.items()))] if given else []


def detect_one(job: Job, checkpoint, settings, args: argparse.Namespace, scan=None) -> None:
    """Detect one scan (``scan``: the job's scan already loaded, else read here) and write its outputs."""
    import numpy as np

    from ..detection.detectors import describe_settings
    from ..detection.pipeline import iter_detect
    from ..detection.postprocess import bounded_by_volume, lesion_table, threshold_mask
    from ..restoration import run_to_end
    from ..scans.nifti import load_matching, save_stack, save_volume

    inputs = scan if scan is not None else job.load()
    scan = inputs.reference if job.contrasts else inputs
    brain = load_matching(args.mask, scan, what="brain mask") if args.mask else None
    post = postprocessing_options(args, checkpoint)
    bounded_by_volume(scan.shape, erosion=post.erosion, median=post.median, min_size=args.min_size)
    bar = progress_bar(100, scan.name, args.quiet)

    def advance(progress) -> None:
        bar.n = round(100 * progress.fraction)
        bar.set_postfix_str(progress.describe())
        bar.refresh()

    generator = iter_detect(
        inputs,
        checkpoint,
        settings,
        brain_mask=brain,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        keep_restorations=job.out_restorations is not None,
        crop=not args.no_crop,
        compile=args.compile,
        runtime=args.runtime,
    )
    result = run_to_end(generator, advance)
    bar.close()
    anomaly = post.apply(result.anomaly_map, result.foreground)
    threshold = result.suggested_threshold if args.threshold == "auto" else args.threshold
    mask = threshold_mask(anomaly, threshold, min_size=args.min_size, region=result.foreground)
    if job.out_map is not None:
        save_volume(job.out_map, anomaly, scan, kind="map", overwrite=args.overwrite)
    if job.out_mask is not None:
        save_volume(job.out_mask, mask, scan, kind="mask", overwrite=args.overwrite)
    _save_per_contrast(job, result, postprocessing_options(args, checkpoint), args.overwrite)
    if job.out_restorations is not None and len(job.contrasts) < 2:
        save_stack(job.out_restorations, np.stack(result.restorations), scan, overwrite=args.overwrite)
    if job.out_flip_mask is not None:
        save_volume(job.out_flip_mask, result.flip_mask, scan, kind="map", overwrite=args.overwrite)
    if not args.quiet:
        lesions = lesion_table(mask, anomaly, scan.affine)
        print(
            f"{scan.name}: {result.seconds:.1f} s on {result.device} ({result.runtime}, batch {result.batch_size}), "
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


def _save_per_contrast(job: Job, result, postprocessing, overwrite: bool) -> None:
    """Several contrasts: each one's map (post-processed as the combined one) and restorations, found
    by name (the job's names may differ in case from the checkpoint's, and come in another order)."""
    import numpy as np

    from ..scans.nifti import save_stack, save_volume

    index = {name.lower(): c for c, name in enumerate(result.channel_maps or result.contrasts)}
    maps = {name.lower(): m for name, m in result.channel_maps.items()}
    for contrast, path in job.per_contrast(job.out_map if job.maps_per_contrast else None).items():
        channel_map = postprocessing.apply(maps[contrast.lower()], result.foreground)
        save_volume(path, channel_map, result.scan, kind="map", overwrite=overwrite)
    for contrast, path in job.per_contrast(job.out_restorations).items():
        steps = np.stack([r[index[contrast.lower()]] for r in result.restorations])
        save_stack(path, steps, result.scan, overwrite=overwrite)

