"""What a checkpoint may claim, and who it is (and whether a path can hold one at all).

A checkpoint's sizes and voxel spacing are read from files anyone can edit; a forged or corrupt one
(a window of 0 or 100000 pixels, a million channels, a 0.001 mm grid) would otherwise allocate
without bound or crash deep inside diffusers. Each is checked here against what a real model has,
before any memory is allocated for it. The fingerprint names a model by its content, so that results
cached under it (saved maps) are never mistaken for another model's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError
from .windows import sample_size_pair

if TYPE_CHECKING:
    from .checkpoint import Checkpoint, CheckpointInfo

#: What a real DISYRE network can have (the official one: 128 px windows, 5 blocks of 64 to 256
#: channels, 1 to 2 layers each). A config beyond these is corrupt or forged and is refused before
#: any memory is allocated for it.
UNET_BOUNDS = {"sample_size": (8, 1024), "blocks": (1, 8), "channels": (1, 2048), "layers_per_block": (1, 8)}
MAX_PARAMETERS = 2_000_000_000
#: Voxel spacing a checkpoint may ask scans to be resampled to, in mm (finer would allocate a huge grid).
SPACING_BOUNDS = (0.1, 10.0)


def check_format(meta: dict[str, Any], name: str, version: int, source: str, what: str) -> None:
    """Refuse metadata that is not ``name`` or that a newer napari-disyre wrote (``what`` names it).

    Both checkpoint formats carry their name and version; refusing a newer version here, rather
    than reading the fields it knows, keeps an old install from giving a silently wrong map.
    """
    if meta.get("format") != name:
        raise CheckpointError(
            f"{source}: not a napari-disyre {what} file (format is {meta.get('format')!r})."
        )
    try:
        found = int(meta.get("format_version", 0))
    except (TypeError, ValueError):
        raise CheckpointError(
            f"{source}: format version {meta.get('format_version')!r} is not a number."
        ) from None
    if found > version:
        raise CheckpointError(
            f"{source}: written by a newer napari-disyre (format version {found}, this one reads up to "
            f"{version}); upgrade napari-disyre to read it."
        )


def check_config_bounds(config: dict[str, Any], source: str) -> None:
    """Refuse sizes no real model has (a window of 0 or 100000 pixels, a million channels)."""
    try:
        blocks = [int(c) for c in config.get("block_out_channels", (64,))]
        sizes = {
            "sample_size": sample_size_pair(config.get("sample_size", 128)),
            "blocks": (len(config["down_block_types"]),),
            "channels": tuple(blocks),
            "layers_per_block": (int(config.get("layers_per_block", 2)),),
        }
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: malformed UNet sizes ({exc}).") from exc
    for key, values in sizes.items():
        low, high = UNET_BOUNDS[key]
        if not values or not all(low <= v <= high for v in values):
            raise CheckpointError(
                f"{source}: {key} is {values if len(values) != 1 else values[0]}, outside what a real model "
                f"has ({low} to {high}); the config is corrupt. Use the checkpoint as it was saved."
            )
    if len(blocks) != len(config["down_block_types"]) or len(config["up_block_types"]) != len(blocks):
        raise CheckpointError(f"{source}: block_out_channels and the block type lists differ in length.")
    factor = 2 ** (len(blocks) - 1)
    if any(n % factor for n in sizes["sample_size"]):
        raise CheckpointError(
            f"{source}: sample_size {sizes['sample_size']} is not divisible by {factor}, which its "
            f"{len(blocks)} blocks need (each halves the window); the config is corrupt."
        )
    estimate = sum(9 * c * c * (4 * sizes["layers_per_block"][0] + 3) for c in blocks)
    if estimate > MAX_PARAMETERS:
        raise CheckpointError(
            f"{source}: this config describes about {estimate / 1e9:.0f} billion parameters, more than "
            f"{MAX_PARAMETERS / 1e9:.0f} billion (the bundled demo UNet has 4 million); refused before allocating it."
        )


def check_info_bounds(info: CheckpointInfo, source: str) -> CheckpointInfo:
    """Refuse a voxel spacing that would make the model grid absurdly fine or coarse."""
    spacing = info.preprocessing.spacing
    low, high = SPACING_BOUNDS
    if spacing is not None and not all(low <= s <= high for s in spacing):
        raise CheckpointError(
            f"{source}: the checkpoint asks for a voxel spacing of {spacing} mm, outside {low} to {high} mm "
            "(a brain at 0.001 mm would need a grid of 10^15 voxels); the metadata is corrupt."
        )
    if info.steps < 1:
        raise CheckpointError(f"{source}: steps is {info.steps}; a restoration needs at least 1 step.")
    return info


def checkpoint_fingerprint(checkpoint: Checkpoint) -> str:
    """A hash of everything that makes a checkpoint what it is (weights, UNet config, schedule,
    metadata), so that results cached under it are never mistaken for another model's."""
    import hashlib

    from .unet import unet_config_dict

    digest = hashlib.sha256()
    if getattr(checkpoint, "kind", "disyre") == "berdiff":  # both networks and what berdiff.json says
        networks = {"autoencoder.": checkpoint.autoencoder, "unet.": checkpoint.unet}
        parts = [
            checkpoint.autoencoder.config.to_dict(),
            checkpoint.unet_config.to_dict(),
            dataclasses.asdict(checkpoint.schedule),
            dataclasses.asdict(checkpoint.inference),
            checkpoint.preprocessing,
        ]
    else:
        networks = {"": checkpoint.unet}  # the key names as they have always been hashed
        parts = [
            unet_config_dict(checkpoint.unet) | {"_diffusers_version": ""},
            checkpoint.schedule.to_config(),
            # saved maps are raw: the recorded post-processing default and the free text do not make them
            {
                k: v
                for k, v in checkpoint.info.to_dict().items()
                if k not in ("postprocessing", "description")
            },
        ]
    digest.update(json.dumps(parts, sort_keys=True, default=str).encode())
    for prefix, network in networks.items():
        for name, tensor in sorted(network.state_dict().items()):
            digest.update(f"{prefix}{name}".encode())
            digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def checkpoint_path(path: str | Path) -> Path:
    """``path`` if it can hold a checkpoint (an existing folder or .safetensors file; ``demo`` and
    ``demo-berdiff`` name the bundled models), else a CheckpointError."""
    from .sample_data import bundled_checkpoint

    path = bundled_checkpoint(path)
    if not path.exists():
        raise CheckpointError(
            f"{path}: checkpoint not found (give a checkpoint folder or .safetensors file, or demo or "
            "demo-berdiff for a bundled model)."
        )
    if path.is_file() and path.suffix != ".safetensors":
        # the official Bernoulli diffusion code saves bare state dicts (.pt, .th) without their
        # network configuration, and releases no trained ones: say so rather than guess a shape
        raw = (
            " A bare PyTorch state dict (.pt, .th, .pth, such as the official Bernoulli diffusion "
            "code's) holds no network configuration and is not read: train with napari-disyre train."
            if path.suffix in {".pt", ".th", ".pth"}
            else ""
        )
        raise CheckpointError(
            f"{path}: not a checkpoint. Give a checkpoint folder (with model_index.json, unet/ and "
            "scheduler/), a Bernoulli diffusion folder (with berdiff.json) or a single .safetensors "
            f"file written by napari-disyre.{raw}"
        )
    return path
