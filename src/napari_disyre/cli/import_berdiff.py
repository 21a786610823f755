"""``napari-disyre import-berdiff``: the authors' masked Bernoulli diffusion checkpoints as a project
folder (``berdiff.json`` + safetensors), usable by ``detect``, ``evaluate``, the widget and ``info``.

The official files are plain PyTorch state dicts; they are read with ``weights_only=True`` (no code
runs), every tensor must land in the project's networks, and the folder records the files' names,
sizes and SHA-256 and the settings given here. Defaults are the official README's.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import-berdiff",
        help="import the authors' Bernoulli diffusion checkpoints",
        description="Convert an official binary autoencoder (binaryae_ema_STEP.th) and an official "
        "Bernoulli diffusion UNet (brats*.pt / emabrats0.999_*.pt, JuliaWolleb/Anomaly_berdiff) into a "
        "napari-disyre checkpoint folder. Only tensors are read. Defaults are the official README's.",
    )
    parser.add_argument("--autoencoder", type=Path, required=True, help="official binaryae[_ema]_STEP.th")
    parser.add_argument("--unet", type=Path, required=True, help="official UNet state dict (.pt)")
    parser.add_argument("--out", "-o", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    shape = parser.add_argument_group("what the files do not say (official README defaults)")
    shape.add_argument("--channels", type=int, default=4, help="input contrasts (BraTS 4, OCT 1; default 4)")
    shape.add_argument("--image-size", type=int, default=256, help="slice side in pixels (default 256)")
    shape.add_argument("--code-size", type=int, default=128, help="latent bits per position (default 128)")
    shape.add_argument(
        "--contrasts",
        default=None,
        help="contrast names in channel order, comma-separated (default for 4 channels: the official "
        "BraTS order t1,t1ce,t2,flair)",
    )
    shape.add_argument("--noise-level", type=int, default=200, help="default noise level L (default 200)")
    shape.add_argument("--flip-threshold", type=float, default=0.5, help="default threshold P (default 0.5)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..berdiff.checkpoint import save_berdiff
    from ..berdiff.official import OfficialSettings, import_official
    from ..outputs import refuse_existing
    from .info import describe

    refuse_existing(args.out, args.overwrite)
    settings = OfficialSettings(
        channels=args.channels,
        image_size=args.image_size,
        code_size=args.code_size,
        noise_level=args.noise_level,
        threshold=args.flip_threshold,
        contrasts=tuple(c.strip() for c in args.contrasts.split(",")) if args.contrasts else (),
    )
    model = import_official(args.autoencoder, args.unet, settings)
    save_berdiff(args.out, model, overwrite=args.overwrite)
    model.source = args.out
    print("\n".join([f"wrote {args.out}", *describe(model)]))
    return 0
