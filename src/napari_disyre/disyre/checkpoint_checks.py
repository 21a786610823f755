"""What a DISYRE checkpoint may claim: sizes and spacing a real model has, and the schema of disyre.json.

A DISYRE checkpoint's sizes and voxel spacing are read from files anyone can edit; a forged or corrupt one
(a window of 0 or 100000 pixels, a million channels, a 0.001 mm grid) would otherwise allocate
without bound or crash deep inside diffusers. Each is checked here against what a real model has,
before any memory is allocated for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from ..errors import CheckpointError
from ..validation import (
    ContrastNames,
    Declared,
    Flag,
    MapOptions,
    PreprocessingJson,
    Quantiles,
    Record,
    RestorationSteps,
    Text,
    Whole,
)
from .windows import sample_size_pair

if TYPE_CHECKING:
    from .checkpoint import CheckpointInfo

#: What a real DISYRE network can have (the official one: 128 px windows, 5 blocks of 64 to 256
#: channels, 1 to 2 layers each). A config beyond these is corrupt or forged and is refused before
#: any memory is allocated for it.
UNET_BOUNDS = {"sample_size": (8, 1024), "blocks": (1, 8), "channels": (1, 2048), "layers_per_block": (1, 8)}
MAX_PARAMETERS = 2_000_000_000
#: Voxel spacing a checkpoint may ask scans to be resampled to, in mm (finer would allocate a huge grid).
SPACING_BOUNDS = (0.1, 10.0)


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


class DisyreJson(Declared):
    """``disyre.json`` (:class:`~napari_disyre.disyre.checkpoint.CheckpointInfo`)."""

    format: Literal["napari-disyre"]
    format_version: Whole
    contrast: Annotated[str, Field(strict=True, max_length=100)] | None = None
    contrasts: ContrastNames = []
    preprocessing: PreprocessingJson = PreprocessingJson()
    steps: RestorationSteps = 4
    method: Annotated[str, Field(strict=True, max_length=64)] = "mean-single-step"
    weight_foreground: Flag = True
    healthy_score_quantiles: Quantiles = {}
    training: Record = {}
    description: Text = ""
    postprocessing: MapOptions = MapOptions()
