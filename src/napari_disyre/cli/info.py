"""``napari-disyre info``: what a checkpoint is, before running it.

Prints the one-line summary the widget shows (contrast, size, window, grid), the restoration defaults
that ``detect`` and the widget take from it, the map post-processing ``detect`` and ``evaluate`` apply
by default when it records one, the healthy-score quantiles behind the suggested
threshold, and how it was trained, so that a model folder can be identified without opening JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "info", help="describe a checkpoint", description="Describe a checkpoint: network, grid, defaults."
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        nargs="?",
        default=None,
        help="checkpoint folder or .safetensors file (default: the bundled demo T1 model)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .common import open_checkpoint

    checkpoint = open_checkpoint(args.checkpoint)
    print("\n".join(describe(checkpoint)))
    return 0


def describe(checkpoint) -> list[str]:
    """The lines ``info`` prints."""
    from ..detection.detectors import contrasts_of, healthy_quantiles_of

    info = checkpoint.info if checkpoint.kind == "disyre" else checkpoint
    lines = [checkpoint.summary()]
    if checkpoint.kind == "berdiff":
        lines.append(
            f"method: masked Bernoulli diffusion; defaults: noise level L = {checkpoint.inference.noise_level}, "
            f"flip threshold P = {checkpoint.inference.threshold:g}, seed {checkpoint.inference.seed}"
        )
    else:
        lines.append(
            f"method: DISYRE; defaults: S = {info.steps}, {info.method}, "
            f"{'foreground-weighted' if info.weight_foreground else 'unweighted'} scores"
        )
        if info.postprocessing:
            from ..detection.postprocess import MapPostprocessing

            lines.append(
                f"map post-processing: {MapPostprocessing.from_dict(info.postprocessing).describe()}"
            )
    contrasts = contrasts_of(checkpoint)
    if len(contrasts) > 1:
        lines.append(
            f"inputs: {len(contrasts)} contrasts, one scan each, in channel order: "
            + " ".join(f"--scan {c}=PATH" for c in contrasts)
            + (
                "; the map is the mean of the per-contrast maps"
                if checkpoint.kind == "disyre"
                else "; the map sums the squared error over the contrasts"
            )
        )
    if checkpoint.kind == "berdiff" and checkpoint.origin:
        lines.append(_origin_line(checkpoint.origin, checkpoint.unet_config.network))
    quantiles = healthy_quantiles_of(checkpoint)
    if quantiles:
        lines.append("healthy-score quantiles: " + ", ".join(f"{q}: {v:.4g}" for q, v in quantiles.items()))
    record = info.training
    if record:
        wall = record.get("wall_time_s")
        steps = (
            f"{record.get('ae_steps')} autoencoder + {record.get('diffusion_steps')} diffusion steps"
            if checkpoint.kind == "berdiff"
            else f"{record.get('steps')} steps of {record.get('batch_size')}"
        )
        lines.append(
            f"trained: preset {record.get('preset')}, {steps}, "
            f"{len(record.get('training_scans', []))} scans, "
            + (f"{wall / 3600:.1f} h" if wall is not None else "time not recorded")
            + f" on {record.get('device', 'an unrecorded device')}"
        )
        if checkpoint.kind == "berdiff" and "quality_gates" in record:
            lines.append(_gates_line(record["quality_gates"]))
    if info.description:
        lines.append(info.description)
    return lines


def _gates_line(gates: dict) -> str:
    """The Bernoulli diffusion run's quality gates as measured at the end of its training."""
    if not gates.get("held_out_slices"):
        return "quality gates: not measured (no held-out slices): not shippable"
    verdict = "passed" if gates["passed"] else "FAILED (not shippable)"
    return (
        f"quality gates {verdict}: latent UNet {gates['unet_bits']:.4f} bits vs per-channel trivial "
        f"guess {gates['trivial_bits']:.4f} (margin {gates['gates']['unet_margin_bits']:g}), autoencoder "
        f"error {gates['ae_error']:.4f} (bound {gates['gates']['ae_max_error']:g}), "
        f"{gates['held_out_slices']} held-out slices"
    )


def _origin_line(origin: dict, network: str) -> str:
    """Whose weights an imported checkpoint holds, from which files (first 12 hex of their SHA-256)."""
    files = ", ".join(
        f"{origin[part]['file']} (sha256 {origin[part]['sha256'][:12]})"
        for part in ("autoencoder", "unet")
        if part in origin
    )
    return f"origin: {origin.get('source', 'imported weights')}; {files}; latent UNet: {network} network"
