"""Network sizes and training defaults for the Bernoulli diffusion detector (no torch needed here).

``official`` reproduces the paper's networks for 4-channel 256 x 256 BraTS slices: an autoencoder of
4.26 M parameters with a 128-bit x 32 x 32 code, and a 36.03 M-parameter latent UNet. ``small`` keeps
the same structure (three halvings, binary code, attention in the middle) at a size that trains on a
2-core CPU in about two hours on single-contrast 128 x 128 slices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..errors import DisyreError

LatentNetwork = Literal["diffusers", "guided-diffusion"]
LATENT_NETWORKS: tuple[str, ...] = ("diffusers", "guided-diffusion")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Shape of the binarising autoencoder (method document §2).

    ``codebook_bits`` is the number of binary latent channels, ``emb_dim`` the width of the embedding
    each bit adds to. ``norm_groups`` is 32 in the official network; small networks need fewer, since
    every width must be a multiple of it.
    """

    in_channels: int = 1
    image_size: int = 256
    nf: int = 32
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    codebook_bits: int = 128
    emb_dim: int = 256
    norm_groups: int = 32

    def __post_init__(self) -> None:
        widths = {self.nf * m for m in self.ch_mult} | {self.emb_dim}
        bad = sorted(w for w in widths if w % self.norm_groups)
        if bad:
            raise DisyreError(
                f"autoencoder widths {bad} are not multiples of norm_groups={self.norm_groups}; "
                "change nf, ch_mult, emb_dim or norm_groups."
            )
        if self.image_size % self.downsampling:
            raise DisyreError(
                f"autoencoder image_size {self.image_size} is not a multiple of {self.downsampling} "
                f"(2 to the number of halvings, len(ch_mult) - 1)."
            )

    @property
    def downsampling(self) -> int:
        """How many image pixels one latent position covers along each axis."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsampling

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AutoencoderConfig:
        return cls(**_tuples(_known(cls, d), ("ch_mult", "attn_resolutions")))


@dataclass(frozen=True)
class LatentUNetConfig:
    """Shape of the latent denoiser (method document §3.3).

    ``network`` says which implementation holds the weights: ``"diffusers"`` (a ``UNet2DModel``, the
    project's own checkpoints) or ``"guided-diffusion"`` (the authors' module structure and names,
    for their imported checkpoints); both compute the same function of the same shapes.

    ``attention_levels`` lists the resolution levels (0 = full latent size) whose blocks carry
    attention; the middle block always has one. One attention head, as the official network.
    """

    bits: int = 128
    latent_size: int = 32
    block_out_channels: tuple[int, ...] = (128, 256, 256, 256)
    layers_per_block: int = 2
    attention_levels: tuple[int, ...] = (1,)
    norm_groups: int = 32
    network: LatentNetwork = "diffusers"

    def __post_init__(self) -> None:
        if self.network not in LATENT_NETWORKS:
            raise DisyreError(
                f"unknown latent network {self.network!r}; choose one of {', '.join(LATENT_NETWORKS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentUNetConfig:
        return cls(**_tuples(_known(cls, d), ("block_out_channels", "attention_levels")))


@dataclass(frozen=True)
class TrainingDefaults:
    """Optimisation defaults of one preset (method document §2.3 and §3.4).

    The official autoencoder stops at step 30,000 (its loop crashes at 30,002); the official
    diffusion loop never stops and its step count is not recorded, so ``official.diffusion_steps``
    is this project's choice. ``small``'s counts are sized for a 2-core CPU.
    """

    ae_steps: int
    ae_batch_size: int
    ae_learning_rate: float
    diffusion_steps: int
    diffusion_batch_size: int
    diffusion_learning_rate: float = 1e-4


@dataclass(frozen=True)
class BerDiffPreset:
    name: str
    autoencoder: AutoencoderConfig
    unet: LatentUNetConfig
    training: TrainingDefaults
    description: str


def _official(in_channels: int) -> BerDiffPreset:
    return BerDiffPreset(
        name="official",
        autoencoder=AutoencoderConfig(in_channels=in_channels),
        unet=LatentUNetConfig(),
        training=TrainingDefaults(
            ae_steps=30_000,
            ae_batch_size=24,
            ae_learning_rate=4.5e-6 * 24,
            diffusion_steps=100_000,
            diffusion_batch_size=36,
        ),
        description="the paper's networks (AE 4.26 M with 4 channels, latent UNet 36.03 M): for a GPU",
    )


def _small(in_channels: int) -> BerDiffPreset:
    autoencoder = AutoencoderConfig(
        in_channels=in_channels,
        image_size=128,
        nf=16,
        ch_mult=(1, 2, 2, 4),
        res_blocks=1,
        attn_resolutions=(),
        codebook_bits=32,
        emb_dim=64,
        norm_groups=8,
    )
    return BerDiffPreset(
        name="small",
        autoencoder=autoencoder,
        unet=LatentUNetConfig(
            bits=32,
            latent_size=autoencoder.latent_size,
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            attention_levels=(1,),
            norm_groups=32,
        ),
        training=TrainingDefaults(
            ae_steps=2000,
            ae_batch_size=8,
            ae_learning_rate=2e-4,
            diffusion_steps=4000,
            diffusion_batch_size=32,
        ),
        description="a 32-bit x 16 x 16 code of 128 x 128 slices: trains on a 2-core CPU",
    )


_PRESETS = {"official": _official, "small": _small}
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def get_berdiff_preset(name: str, in_channels: int = 1) -> BerDiffPreset:
    """The preset ``name`` for slices of ``in_channels`` contrasts."""
    try:
        make = _PRESETS[name]
    except KeyError:
        raise DisyreError(f"unknown preset {name!r}; choose one of {', '.join(_PRESETS)}") from None
    return make(in_channels)


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}")
    return dict(d)


def _tuples(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: tuple(v) if k in keys and v is not None else v for k, v in d.items()}
