"""The Bernoulli diffusion checkpoint folder's file names and metadata, read without torch.

``load_checkpoint`` and the widget call :func:`is_berdiff_folder` and :func:`read_berdiff_metadata`
to tell the two methods apart and to show this method's controls (L, P) as soon as a folder is
chosen, before torch is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ..checkpoint_files import check_format, read_json_object
from ..errors import CheckpointError
from ..validation import (
    MAX_BERDIFF_CHANNELS,
    ContrastNames,
    Count,
    Declared,
    Finite,
    InferenceOptions,
    PreprocessingJson,
    Quantiles,
    Record,
    Size,
    Text,
    Whole,
    check,
)

METHOD = "berdiff"
FORMAT_NAME = "napari-disyre-berdiff"
FORMAT_VERSION = 1
METADATA_FILE = "berdiff.json"
AE_WEIGHTS = "autoencoder.safetensors"
UNET_WEIGHTS = "latent_unet.safetensors"


def is_berdiff_folder(path: str | Path) -> bool:
    return (Path(path) / METADATA_FILE).is_file()


def read_berdiff_metadata(folder: str | Path) -> dict[str, Any]:
    """``berdiff.json`` of ``folder``, checked to name this format and method and then against its
    schema (:class:`~napari_disyre.validation.BerDiffJson`: every size, type and range) before any
    network is built from it; CheckpointError naming the field if not."""
    path = Path(folder) / METADATA_FILE
    meta = read_json_object(path, "Bernoulli diffusion metadata")
    check_format(meta, FORMAT_NAME, FORMAT_VERSION, str(path), "Bernoulli diffusion metadata")
    if meta.get("method") != METHOD:
        raise CheckpointError(
            f"{path}: says it holds method {meta.get('method')!r}, not {METHOD!r}; the folder is mislabelled."
        )
    check(BerDiffJson, meta, f"{path}: malformed Bernoulli diffusion metadata", error=CheckpointError)
    return meta


def recorded_contrasts(meta: dict[str, Any]) -> tuple[str, ...]:
    """The contrast names ``berdiff.json`` gives its channels, in order; folders imported before the
    field existed kept them in their ``training`` record."""
    legacy = meta.get("training", {}).get("contrasts")
    return tuple(meta.get("contrasts") or (legacy if isinstance(legacy, list) else ()))


# -- the schema of berdiff.json, checked before any network is built from it -----------------------

Channels = Annotated[Count, Field(le=2048)]
Levels = Annotated[list[Channels], Field(min_length=1, max_length=8)]
#: More weights than any real network of either method has (the official ones: tens of millions).
MAX_PARAMETERS = 500_000_000


def _not_absurd(widths: list[int], convolutions: int, source: str) -> None:
    """Refuse a network whose 3x3 convolutions alone would exceed :data:`MAX_PARAMETERS`."""
    estimate = sum(9 * w * w * convolutions for w in widths)
    if estimate > MAX_PARAMETERS:
        raise ValueError(
            f"{source} describe about {estimate / 1e6:.0f} million weights, more than any real model "
            f"({MAX_PARAMETERS / 1e6:.0f} million); refused before allocating them"
        )


class AutoencoderJson(Declared):
    in_channels: Annotated[Count, Field(le=MAX_BERDIFF_CHANNELS)] = 1
    image_size: Annotated[Count, Field(ge=8, le=1024)] = 128
    nf: Channels = 64
    ch_mult: Levels = [1, 2, 2, 4]
    res_blocks: Annotated[Count, Field(le=8)] = 2
    attn_resolutions: Annotated[list[Annotated[Count, Field(le=1024)]], Field(max_length=8)] = []
    codebook_bits: Channels = 128
    emb_dim: Channels = 256
    norm_groups: Annotated[Count, Field(le=256)] = 32

    @model_validator(mode="after")
    def _size(self) -> AutoencoderJson:
        _not_absurd([self.nf * m for m in self.ch_mult], 4 * self.res_blocks + 2, "nf and ch_mult")
        return self


class LatentUNetJson(Declared):
    bits: Channels = 128
    latent_size: Annotated[Count, Field(ge=2, le=256)] = 32
    block_out_channels: Levels = [128, 256, 256, 256]
    layers_per_block: Annotated[Count, Field(le=8)] = 2
    attention_levels: Annotated[list[Annotated[Size, Field(le=7)]], Field(max_length=8)] = [1]
    norm_groups: Annotated[Count, Field(le=256)] = 32
    network: Literal["diffusers", "guided-diffusion"] = "diffusers"  # guided-diffusion: imported official

    @model_validator(mode="after")
    def _size(self) -> LatentUNetJson:
        _not_absurd(self.block_out_channels, 4 * self.layers_per_block + 3, "block_out_channels")
        return self


class ScheduleJson(Declared):
    steps: Annotated[Count, Field(ge=2, le=100_000)] = 1000
    beta_start: Annotated[Finite, Field(gt=0, lt=1)] = 1e-4
    beta_end: Annotated[Finite, Field(gt=0, lt=1)] = 0.02
    forward: Literal["code", "symmetric"] = "code"


class BerDiffJson(Declared):
    """``berdiff.json`` (:func:`~napari_disyre.berdiff.checkpoint.load_berdiff`)."""

    format: Literal["napari-disyre-berdiff"]
    format_version: Whole
    method: Literal["berdiff"]
    contrasts: ContrastNames = []  # the autoencoder's input channels, in order (none: one unnamed channel)
    autoencoder: AutoencoderJson
    latent_unet: LatentUNetJson
    schedule: ScheduleJson = ScheduleJson()
    inference: InferenceOptions = InferenceOptions()
    preprocessing: PreprocessingJson = PreprocessingJson()
    healthy_score_quantiles: Quantiles = {}
    training: Record = {}
    origin: Record = {}  # imported weights: whose, which files (napari-disyre import-berdiff)
    description: Text = ""
