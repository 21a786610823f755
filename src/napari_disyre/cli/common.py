"""Options and helpers that several subcommands share."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import InputError


def add_checkpoint_option(parser: argparse.ArgumentParser, several: bool = False) -> None:
    parser.add_argument(
        "--checkpoint",
        "-c",
        type=Path,
        default=None,
        action="append" if several else "store",
        help="checkpoint folder (DISYRE: official layout or napari-disyre; masked Bernoulli diffusion: "
        "berdiff.json) or .safetensors file (default: the bundled demo T1 model)",
    )


def add_restoration_options(parser: argparse.ArgumentParser) -> None:
    from ..disyre.methods import METHODS
    from ..runtime.devices import DEVICE_CHOICES, PRECISION_CHOICES
    from ..runtime.sessions import INSTALL_COMMAND, RUNTIME_CHOICES
    from ..validation import MAP_REFERENCES, Count, NoiseLevel, Probability, RestorationSteps, cli_type

    group = parser.add_argument_group("restoration (DISYRE checkpoints)")
    group.add_argument(
        "--steps", "-s", type=cli_type(RestorationSteps), default=None, help="restoration steps S (default: the checkpoint's, 4)"
    )
    group.add_argument(
        "--method", choices=METHODS, default=None, help="default: the checkpoint's (mean-single-step)"
    )
    group.add_argument(
        "--timesteps",
        choices=("official", "exact"),
        default=None,
        help="'official' (default) reproduces the official timestep quirks (prev(t) = t - T//S); "
        "'exact' runs exactly S evenly spaced steps",
    )
    group.add_argument(
        "--no-weight-foreground", action="store_true", help="do not scale scores by the foreground fraction"
    )
    group.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    group.add_argument(
        "--precision", choices=PRECISION_CHOICES, default="auto", help="auto: bf16/fp16 on CUDA, else float32"
    )
    group.add_argument(
        "--runtime",
        choices=RUNTIME_CHOICES,
        default="auto",
        help="what evaluates the networks (both methods): auto = ONNX Runtime for float32 on the CPU "
        f"when installed ({INSTALL_COMMAND}), else torch; the network is exported once per checkpoint",
    )
    group.add_argument(
        "--batch-size", type=cli_type(Count), default=None, help="windows per batch (default: from free memory)"
    )
    group.add_argument(
        "--no-crop", action="store_true", help="do not crop to the non-zero box before sliding windows"
    )
    group.add_argument(
        "--fast",
        action="store_true",
        help="fast mode: windows step by half a window instead of a quarter, and S = 1 unless --steps "
        "is given (see README, Benchmarks: its speed and AP against the exact mode)",
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network (pays off for cohorts on a GPU; falls back to eager if it fails)",
    )

    bd = parser.add_argument_group("masked Bernoulli diffusion (berdiff checkpoints)")
    bd.add_argument(
        "--noise-level",
        "-L",
        type=cli_type(NoiseLevel),
        default=None,
        help="noise level L, reverse steps (default: the checkpoint's)",
    )
    bd.add_argument(
        "--flip-threshold",
        "-P",
        type=cli_type(Probability),
        default=None,
        help="flip-probability threshold P of the growing mask (default: the checkpoint's)",
    )
    bd.add_argument(
        "--map-reference",
        choices=MAP_REFERENCES,
        default=None,
        help="compare the restoration with the input (the official map, default) or with the "
        "autoencoder's reconstruction of it (its own error cancels; see docs/berdiff-official.md)",
    )


def add_postprocessing_options(parser: argparse.ArgumentParser) -> None:
    from ..validation import MAX_MEDIAN, Median, Size, cli_type

    group = parser.add_argument_group("map post-processing (default: the checkpoint's, else none)")
    group.add_argument(
        "--erode", type=cli_type(Size), metavar="N", help="zero the map within N voxels of the brain's edge"
    )
    group.add_argument(
        "--median",
        type=cli_type(Median),
        metavar="K",
        help=f"3D median filter of the map, K voxels per axis (at most {MAX_MEDIAN})",
    )


def postprocessing_options(args: argparse.Namespace, checkpoint):
    """The map post-processing: the checkpoint's recorded default (DISYRE checkpoints record one in
    ``disyre.json``; Bernoulli diffusion ones none), overridden by --erode/--median."""
    from ..detection.postprocess import MapPostprocessing

    info = getattr(checkpoint, "info", None)
    return MapPostprocessing.for_checkpoint(info, erosion=args.erode, median=args.median)


def restoration_overrides(args: argparse.Namespace) -> dict:
    """The restoration options given on the command line (None: not given), by settings field."""
    return dict(
        steps=args.steps,
        method=args.method,
        spacing=args.timesteps,
        weight_foreground=False if args.no_weight_foreground else None,
        fast=True if args.fast else None,
        noise_level=args.noise_level,
        threshold=args.flip_threshold,
        reference=args.map_reference,
    )


def restoration_settings(args: argparse.Namespace, checkpoint):
    """The checkpoint's defaults with the options given; an option of the other method is an error."""
    from ..detection.detectors import default_settings

    return default_settings(checkpoint, **restoration_overrides(args))


def open_checkpoint(path: Path | None):
    from ..detection.detectors import load_checkpoint
    from ..sample_data import demo_checkpoint_path

    return load_checkpoint(path if path is not None else demo_checkpoint_path())


def progress_bar(total: int, desc: str, quiet: bool = False):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="%", disable=quiet, dynamic_ncols=True, leave=False)


def named_values(items: list[str] | None, flag: str, what: str) -> dict[str, str]:
    """``["flair=a.nii.gz", "t2=b.nii.gz"]`` as ``{"flair": "a.nii.gz", "t2": "b.nii.gz"}``, in the order
    given (the repeated ``--scan NAME=PATH`` of several contrasts); a name given twice is refused."""
    named: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value:
            raise InputError(f"{flag} {item}: write it as {flag} CONTRAST={what}, e.g. {flag} flair={what}.")
        if name.lower() in (n.lower() for n in named):
            raise InputError(f"{flag}: the contrast {name} is given twice; give each contrast once.")
        named[name] = value
    return named


def distinct_names(scans: list[Path], quiet: bool) -> list[str]:
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
