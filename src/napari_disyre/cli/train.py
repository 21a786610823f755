"""``napari-disyre train``: a restoration model from a folder of healthy scans."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InputError, OutputError
from .common import named_values


def register(commands: argparse._SubParsersAction) -> None:
    from ..runtime.devices import DEVICE_CHOICES, PRECISION_CHOICES
    from ..training.presets import PRESETS
    from ..validation import (
        CodeBits,
        Count,
        Crop,
        GridMm,
        LearningRate,
        NoiseLevel,
        Probability,
        Seed,
        Size,
        cli_type,
    )

    parser = commands.add_parser(
        "train",
        help="train a model on healthy scans",
        description="Train a DISYRE restoration network (or, with --method berdiff, a masked Bernoulli "
        "diffusion detector) on the healthy scans found in HEALTHY_DIR: one contrast, or several "
        "(--scan-name) from one folder per patient. The output folder is a checkpoint plus napari-disyre "
        "metadata, a CSV log and a resumable training state.",
    )
    parser.add_argument("healthy_dir", type=Path, metavar="HEALTHY_DIR")
    parser.add_argument(
        "--method",
        choices=("disyre", "berdiff"),
        default="disyre",
        help="disyre: the restoration network; berdiff: masked Bernoulli diffusion (autoencoder, then "
        "the latent diffusion model; always with EMA)",
    )
    parser.add_argument(
        "--out", "-o", type=Path, required=True, metavar="CKPT", help="checkpoint folder to write"
    )
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="small",
        help="; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()),
    )
    parser.add_argument(
        "--steps", type=cli_type(Count), default=None, help="optimiser steps (default: the preset's)"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--pattern", default="**/*.nii*", help="glob for scans under HEALTHY_DIR (default: all NIfTI)"
    )
    data.add_argument(
        "--scan-name",
        dest="scan_names",
        action="append",
        metavar="CONTRAST=PATTERN",
        help="several contrasts (either method): a file-name pattern per contrast, in the network's channel order, "
        "found in HEALTHY_DIR's sub-folders (one per patient), e.g. --scan-name flair=flair.nii.gz "
        "--scan-name t2=t2.nii.gz; replaces --pattern",
    )
    data.add_argument(
        "--mask-name", default=None, help="file name of each scan's brain mask, beside the scan"
    )
    data.add_argument(
        "--exclude-label-name",
        default=None,
        help="file name of a lesion label beside each scan: slices touching it are not used (tumour-free slices)",
    )
    data.add_argument("--val-dir", type=Path, default=None, help="held-out healthy scans for validation")
    data.add_argument(
        "--val-count",
        type=cli_type(Size),
        default=None,
        help="hold out the last N scans (sorted by path) for validation (default: 10%%, none below 5 scans)",
    )
    data.add_argument(
        "--contrast", default=None, help="contrast recorded in the checkpoint (default: from file names)"
    )
    data.add_argument("--allow-mixed-contrasts", action="store_true")
    data.add_argument("--description", default="", help="free text stored in the checkpoint")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="CKPT",
        help="fine-tune this checkpoint (its network, weights and voxel grid) instead of starting from "
        "random weights of --preset",
    )
    opt.add_argument("--batch-size", type=cli_type(Count), default=None)
    opt.add_argument(
        "--crop",
        type=cli_type(Crop),
        default=None,
        help="training crop size in pixels (16 to 1024, a multiple of 8)",
    )
    opt.add_argument(
        "--lr", type=cli_type(LearningRate), default=None, help="learning rate, 0 to 1 (disyre; default 1e-4)"
    )
    opt.add_argument("--ema", action="store_true", help="keep an exponential moving average of the weights")
    opt.add_argument(
        "--spacing",
        type=cli_type(GridMm),
        nargs=3,
        default=None,
        metavar=("X", "Y", "Z"),
        help="voxel spacing of the model grid in mm (default: the preset's)",
    )
    opt.add_argument("--validate-every", type=cli_type(Count), default=500)
    opt.add_argument("--save-every", type=cli_type(Count), default=1000)
    opt.add_argument("--seed", type=cli_type(Seed), default=0)
    opt.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    opt.add_argument(
        "--workers",
        type=cli_type(Size),
        default=None,
        help="processes that make training batches (default: 0 on the CPU; on a GPU, the free cores up to 8)",
    )
    opt.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="autocast type on CUDA (auto: bfloat16); CPU training is always float32",
    )
    bd = parser.add_argument_group("berdiff (with --method berdiff)")
    bd.add_argument(
        "--ae-steps", type=cli_type(Count), default=None, help="autoencoder steps (default: the preset's)"
    )
    bd.add_argument(
        "--diffusion-steps",
        type=cli_type(Count),
        default=None,
        help="latent diffusion steps (default: the preset's)",
    )
    bd.add_argument(
        "--noise-level",
        type=cli_type(NoiseLevel),
        default=100,
        help="default L stored in the checkpoint (default: 100)",
    )
    bd.add_argument(
        "--flip-threshold",
        type=cli_type(Probability),
        default=0.6,
        help="default P stored in the checkpoint (default: 0.6)",
    )
    bd.add_argument(
        "--forward-process",
        choices=("code", "symmetric"),
        default="code",
        help="code: P(x_t=1) = abar_t x_0, what the official code runs (0-bits never flip); symmetric: "
        "abar_t x_0 + (1 - abar_t)/2, the paper's process, which its posterior assumes (default: code)",
    )
    bd.add_argument(
        "--code-size",
        type=cli_type(CodeBits),
        default=None,
        help="bits per latent position of the autoencoder's binary code (default: the preset's; small "
        "32, official 128, the paper's)",
    )
    bd.add_argument(
        "--gate-unet-margin",
        type=float,
        default=0.01,
        help="quality gate: bits by which the latent UNet's held-out loss must beat the per-channel "
        "trivial guess for the run to count as done (default: 0.01)",
    )
    bd.add_argument(
        "--gate-ae-error",
        type=float,
        default=0.05,
        help="quality gate: bound on the autoencoder's held-out mean |error| in the foreground "
        "(default: 0.05)",
    )
    parser.set_defaults(run=run)


DISYRE_ONLY = {"steps": "--steps", "lr": "--lr", "init": "--init", "crop": "--crop", "workers": "--workers"}
BERDIFF_ONLY = {"ae_steps": "--ae-steps", "diffusion_steps": "--diffusion-steps", "code_size": "--code-size"}


def refuse_options_of_other_method(args: argparse.Namespace, others: dict[str, str], hint: str) -> None:
    """Options of the other method given: refused (silently ignoring them would train something else
    than was asked)."""
    given = [flag for name, flag in others.items() if getattr(args, name) is not None]
    if given:
        raise InputError(f"{', '.join(given)} apply to --method {hint}")


def run(args: argparse.Namespace) -> int:
    from ..outputs import refuse_clashes

    refuse_clashes([args.out], [p for p in (args.healthy_dir, args.val_dir, args.init) if p is not None])
    if args.out.exists() and not args.out.is_dir():
        raise OutputError(f"{args.out}: this is a file, not a folder; give a folder name for the model.")
    scans, validation = split_scans(args)
    contrast = args.contrast
    if contrast is None and not args.allow_mixed_contrasts and not args.scan_names:
        from ..training.contrasts import check_same_contrast

        contrast = check_same_contrast([s.path for s in [*scans, *validation]])
    print(
        f"{len(scans)} training scan(s), {len(validation)} validation scan(s): "
        + ", ".join(s.name for s in validation)
        if validation
        else f"{len(scans)} training scan(s), no validation scans"
    )
    if args.method == "berdiff":
        return run_berdiff(args, scans, validation, contrast)
    return run_disyre(args, scans, validation, contrast)


def split_scans(args: argparse.Namespace):
    """The training scans and the validation scans (--val-dir, or the last --val-count)."""
    find = find_scans
    if args.scan_names:
        patterns = named_values(args.scan_names, "--scan-name", "PATTERN")

        def find(folder, _pattern, mask_name, label_name):
            return find_contrast_scans(folder, patterns, mask_name, label_name)

    scans = find(args.healthy_dir, args.pattern, args.mask_name, args.exclude_label_name)
    if args.val_dir is not None:
        validation = find(args.val_dir, args.pattern, args.mask_name, args.exclude_label_name)
    else:
        count = args.val_count if args.val_count is not None else (len(scans) // 10 if len(scans) >= 5 else 0)
        if count >= len(scans):
            raise InputError(f"--val-count {count} leaves no training scans out of {len(scans)}")
        scans, validation = scans[: len(scans) - count], scans[len(scans) - count :]
    return scans, validation


def contrast_names(args: argparse.Namespace) -> tuple[str, ...]:
    """The contrasts of --scan-name, in channel order (none for one contrast)."""
    return tuple(named_values(args.scan_names, "--scan-name", "PATTERN"))


def run_berdiff(args: argparse.Namespace, scans, validation, contrast) -> int:
    from ..berdiff.run import BerDiffRunConfig, train_berdiff

    refuse_options_of_other_method(
        args, DISYRE_ONLY, "disyre only; for berdiff use --ae-steps/--diffusion-steps."
    )
    config = BerDiffRunConfig(
        preset=args.preset,
        ae_steps=args.ae_steps,
        diffusion_steps=args.diffusion_steps,
        ae_batch_size=args.batch_size,
        diffusion_batch_size=args.batch_size,
        spacing=tuple(args.spacing) if args.spacing else None,
        noise_level=args.noise_level,
        threshold=args.flip_threshold,
        save_every=args.save_every,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        contrast=contrast,
        contrasts=contrast_names(args),
        description=args.description,
        forward=args.forward_process,
        code_size=args.code_size,
        gate_unet_margin=args.gate_unet_margin,
        gate_ae_error=args.gate_ae_error,
    )
    model = train_berdiff(scans, validation, args.out, config, resume=args.resume, overwrite=args.overwrite)
    if not _main_rank():
        return 0
    print(f"saved {args.out}: {model.summary()}; {model.training['wall_time_s'] / 60:.1f} min in all")
    if model.healthy_score_quantiles:
        print(
            f"healthy 99.9th percentile score: {model.healthy_score_quantiles.get('0.999', float('nan')):.4f}"
        )
    gates = model.training["quality_gates"]
    failures = "; ".join(gates["failures"])
    verdict = "passed" if gates["passed"] else f"FAILED: not done, not shippable: {failures}"
    print(f"quality gates {verdict}")
    return 0


def run_disyre(args: argparse.Namespace, scans, validation, contrast) -> int:
    from ..training.loop import TrainingConfig, train

    refuse_options_of_other_method(args, BERDIFF_ONLY, "berdiff only; for disyre use --steps.")
    config = TrainingConfig(
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        learning_rate=args.lr if args.lr is not None else 1e-4,
        ema=args.ema,
        validate_every=args.validate_every,
        save_every=args.save_every,
        seed=args.seed,
        contrast=contrast,
        contrasts=contrast_names(args),
        spacing=tuple(args.spacing) if args.spacing else None,
        device=args.device,
        precision=args.precision,
        workers=args.workers,
        init=str(args.init) if args.init is not None else None,
        description=args.description,
    )
    report = train(
        scans,
        validation,
        args.out,
        config,
        resume=args.resume,
        overwrite=args.overwrite,
        allow_mixed_contrasts=args.allow_mixed_contrasts,
    )
    if not _main_rank():
        return 0
    print(
        f"saved {report.output} after {report.steps_done} steps in {report.seconds / 60:.1f} min; "
        f"loss {report.first_loss:.4f} -> {report.last_loss:.4f}"
        + (f", validation loss {report.last_val_loss:.4f}" if report.last_val_loss is not None else "")
    )
    if report.healthy_score_quantiles:
        print(
            f"healthy 99.9th percentile score: {report.healthy_score_quantiles.get('0.999', float('nan')):.4f}"
        )
    return 0


def _main_rank() -> bool:
    """Outside torchrun, or its rank 0: the process that reports (the others trained the same model)."""
    return os.environ.get("RANK", "0") == "0"


def find_scans(folder: Path, pattern: str, mask_name: str | None, label_name: str | None):
    """The scans under ``folder`` matching ``pattern``, each with its sibling mask and label."""
    from ..scans.nifti import is_nifti_path

    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder. Give the folder that holds the healthy scans.")
    skip = {n for n in (mask_name, label_name) if n}
    candidates = sorted(p for p in folder.glob(pattern) if p.is_file() and p.name not in skip)
    if not candidates:
        raise InputError(
            f"{folder}: no file matches {pattern!r}; the training folder is empty or the pattern is wrong."
        )
    not_nifti = [p for p in candidates if not is_nifti_path(p)]
    if not_nifti:
        raise InputError(
            f"{not_nifti[0]}: not a NIfTI file (.nii/.nii.gz), and {len(not_nifti)} such file(s) match {pattern!r}. "
            "Convert them, or narrow --pattern to the NIfTI scans."
        )
    return [_training_scan(path, mask_name, label_name) for path in candidates]


def find_contrast_scans(
    folder: Path, patterns: dict[str, str], mask_name: str | None, label_name: str | None
):
    """One training scan per patient of ``folder`` holding every contrast's file (``patterns``, see
    :func:`~napari_disyre.scans.contrasts.find_contrast_cases`), with the mask and label beside them."""
    from ..scans.contrasts import find_contrast_cases

    cases = find_contrast_cases(folder, patterns)
    return [
        _training_scan(next(iter(files.values())), mask_name, label_name, tuple(files.items()))
        for files in cases.values()
    ]


def _training_scan(path: Path, mask_name: str | None, label_name: str | None, contrasts=()):
    from ..training.dataset import TrainingScan

    mask = path.parent / mask_name if mask_name else None
    label = path.parent / label_name if label_name else None
    for extra, what in ((mask, "brain mask"), (label, "exclusion label")):
        if extra is not None and not extra.exists():
            raise InputError(f"{extra}: {what} for {path.name} not found.")
    return TrainingScan(path=path, brain_mask=mask, exclude_label=label, contrasts=contrasts)
