"""Network and training presets: the official configuration, and a small one that trains on a CPU.

``official`` is the paper's UNet (26.3 M parameters, 128 x 128 windows, 1 mm). ``small`` keeps the
official block types and window size but has 4.3 M parameters and works at 1.5 mm, where a whole
axial brain slice fits in one 128 x 128 window: no sliding windows at inference, and random 96 x 96
training crops, so a model trains in hours on two CPU cores and restores a volume in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..scans.preprocessing import Preprocessing


@dataclass(frozen=True)
class Preset:
    """A UNet configuration with the training defaults that go with it."""

    name: str
    unet: dict[str, Any]
    preprocessing: Preprocessing
    crop: int
    batch_size: int
    steps: int
    warmup_steps: int
    description: str


OFFICIAL_UNET: dict[str, Any] = {
    "sample_size": [128, 128],
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 2,
    "block_out_channels": [32, 64, 96, 128, 256, 256],
    "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
}

SMALL_UNET: dict[str, Any] = {
    "sample_size": [128, 128],
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 1,
    "block_out_channels": [16, 32, 64, 128, 128],
    "down_block_types": ["DownBlock2D"] * 3 + ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 3,
    "norm_num_groups": 16,
}

PRESETS: dict[str, Preset] = {
    "official": Preset(
        name="official",
        unet=OFFICIAL_UNET,
        preprocessing=Preprocessing(
            spacing=(1.0, 1.0, 1.0), orientation="RAS", percentile_region="foreground"
        ),
        crop=128,
        batch_size=96,
        steps=100_000,
        warmup_steps=500,
        description="the paper's UNet (26.3 M parameters) at 1 mm: for a GPU",
    ),
    "small": Preset(
        name="small",
        unet=SMALL_UNET,
        preprocessing=Preprocessing(
            spacing=(1.5, 1.5, 1.5), orientation="RAS", percentile_region="foreground"
        ),
        crop=96,
        batch_size=16,
        steps=10_000,
        warmup_steps=500,
        description="4.3 M parameters at 1.5 mm, one window per axial slice: trains on a CPU",
    ),
}


def get_preset(name: str) -> Preset:
    from ..errors import DisyreError

    try:
        return PRESETS[name]
    except KeyError:
        raise DisyreError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
