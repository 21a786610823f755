"""The authors' checkpoints made into a project folder: an official binary autoencoder
(``binaryae[_ema]_{step}.th``) and an official Bernoulli diffusion UNet (``brats{step}.pt`` /
``emabrats0.999_{step}.pt``), both plain state dicts read with ``torch.load(weights_only=True)``.

Nothing else is unpickled, every official tensor must land in the project's networks (strict load,
shapes checked), and the resulting ``berdiff.json`` records where the weights came from (file names,
sizes, SHA-256) and the settings they were imported with. The networks' shapes follow from the
official command lines (method document §2.2, §3.3): only the channels, the image size and the code
size vary between them; the UNet's channel multipliers follow the latent size as the official
``create_model`` chooses them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, DisyreError
from ..scans.preprocessing import Preprocessing
from .autoencoder import BinaryAutoencoder, load_official_state, load_strict
from .bernoulli import BernoulliSchedule
from .checkpoint import BerDiffModel
from .inference import InferenceSettings
from .latent_unet import build_latent_unet
from .presets import AutoencoderConfig, LatentUNetConfig

#: The official ``create_model`` multipliers by UNet input size (the latent size).
CHANNEL_MULT = {32: (1, 2, 2, 2), 64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4)}
#: The official UNet width and its single attention resolution (``attention_resolutions="16"``).
UNET_CHANNELS, ATTENTION_RESOLUTION = 128, 16
#: The channel order of the official BraTS slices (method document §1).
BRATS_CONTRASTS = ("t1", "t1ce", "t2", "flair")


@dataclass(frozen=True)
class OfficialSettings:
    """What the official files do not say about themselves; defaults are the official README's
    (BraTS: 4 contrasts of 256 x 256, a 128-bit code, L = 200, P = 0.5)."""

    channels: int = 4
    image_size: int = 256
    code_size: int = 128
    noise_level: int = 200
    threshold: float = 0.5
    contrasts: tuple[str, ...] = ()  # channel order; () = BraTS's (t1, t1ce, t2, flair) for 4 channels

    def channel_names(self) -> tuple[str, ...]:
        """The contrasts in channel order: the official BraTS slices hold t1, t1ce, t2, flair."""
        names = self.contrasts or (BRATS_CONTRASTS if self.channels == len(BRATS_CONTRASTS) else ())
        if names and len(names) != self.channels:
            raise DisyreError(
                f"{len(names)} contrast names ({', '.join(names)}) for a {self.channels}-channel model; "
                "give one name per channel, in the order the model was trained on."
            )
        return names

    def autoencoder(self) -> AutoencoderConfig:
        return AutoencoderConfig(
            in_channels=self.channels, image_size=self.image_size, codebook_bits=self.code_size
        )

    def unet(self) -> LatentUNetConfig:
        latent = self.autoencoder().latent_size
        if latent not in CHANNEL_MULT:
            raise DisyreError(
                f"the official UNet is defined for latent sizes {sorted(CHANNEL_MULT)} (image sizes "
                f"{sorted(8 * s for s in CHANNEL_MULT)}), not {latent} (image size {self.image_size})."
            )
        mult = CHANNEL_MULT[latent]
        attention = (latent // ATTENTION_RESOLUTION).bit_length() - 1
        return LatentUNetConfig(
            bits=self.code_size,
            latent_size=latent,
            block_out_channels=tuple(UNET_CHANNELS * m for m in mult),
            layers_per_block=2,
            attention_levels=(attention,),
            norm_groups=32,
            network="guided-diffusion",
        )


def import_official(autoencoder: Path, unet: Path, settings: OfficialSettings) -> BerDiffModel:
    """Both official files as a :class:`BerDiffModel` (code forward process, the official schedule)."""
    unet_config = settings.unet()
    contrasts = settings.channel_names()
    inference = InferenceSettings(noise_level=settings.noise_level, threshold=settings.threshold)
    schedule = BernoulliSchedule()
    inference.check(schedule)
    ae = BinaryAutoencoder(settings.autoencoder())
    load_official_state(autoencoder, ae)
    network = build_latent_unet(unet_config)
    load_strict(network, _unet_state(unet), str(unet))
    return BerDiffModel(
        autoencoder=ae.eval(),
        unet=network.eval(),
        unet_config=unet_config,
        contrasts=contrasts,
        schedule=schedule,
        inference=inference,
        # the official slices were min-max scaled to [0, 1]; the nearest per-volume scaling here
        preprocessing=Preprocessing(percentiles=(0.0, 100.0)).to_dict(),
        origin={
            "source": "JuliaWolleb/Anomaly_berdiff (official code), imported by napari-disyre import-berdiff",
            "autoencoder": _file_record(autoencoder),
            "unet": _file_record(unet),
            "settings": {
                "channels": settings.channels,
                "image_size": settings.image_size,
                "code_size": settings.code_size,
            },
        },
        description=(
            f"the authors' masked Bernoulli diffusion model ({unet.name}, {autoencoder.name}), "
            f"{settings.channels} contrast(s) of {settings.image_size} x {settings.image_size}"
        ),
    )


def _unet_state(path: Path) -> dict[str, torch.Tensor]:
    """The plain UNet state dict of an official ``.pt`` (no ``module.`` prefix), tensors only."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found; give the official UNet file (brats*.pt).") from None
    except Exception as exc:  # pickle refusal, truncation, zip errors
        raise CheckpointError(
            f"{path}: cannot be read as plain tensors ({type(exc).__name__}: {exc})."
        ) from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(state).__name__}.")
    return state


def _file_record(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}
