"""Saving and loading a Bernoulli diffusion detector: one folder, nothing unpickled.

Layout::

    berdiff.json                 which method and format, the contrasts of the input channels (in
                                 channel order, as disyre.json; absent for one unnamed channel), the
                                 two network configs, the schedule
                                 (with its forward process), the L/P defaults, preprocessing,
                                 training provenance, healthy-score quantiles
    autoencoder.safetensors      the (EMA) autoencoder, official parameter names without ``ae.``
    latent_unet.safetensors      the (EMA) latent UNet, diffusers parameter names, or the official
                                 guided-diffusion names for an imported authors' UNet
                                 (``latent_unet.network`` in berdiff.json says which)

:func:`is_berdiff_folder` lets the project's ``load_checkpoint`` tell this method from DISYRE's
folders (``disyre.json`` / ``unet/``) without reading weights.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..checkpoint_files import channel_names, content_fingerprint
from ..errors import CheckpointError, DisyreError
from ..outputs import atomic_output
from ..scans.preprocessing import Preprocessing
from .autoencoder import BinaryAutoencoder, load_strict
from .bernoulli import BernoulliSchedule
from .inference import InferenceSettings
from .latent_unet import build_latent_unet
from .layout import (
    AE_WEIGHTS,
    FORMAT_NAME,
    FORMAT_VERSION,
    METADATA_FILE,
    METHOD,
    UNET_WEIGHTS,
    read_berdiff_metadata,
    recorded_contrasts,
)
from .presets import AutoencoderConfig, LatentUNetConfig


@dataclass
class BerDiffModel:
    """A loaded detector: both networks (float32, CPU, eval) and what the folder says about them."""

    autoencoder: BinaryAutoencoder
    unet: torch.nn.Module  # a diffusers UNet2DModel, or the official network (unet_config.network)
    unet_config: LatentUNetConfig
    contrasts: tuple[str, ...] = ()  # the input channels by contrast name, in order; () one unnamed channel
    schedule: BernoulliSchedule = field(default_factory=BernoulliSchedule)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    healthy_score_quantiles: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)  # imported weights: whose, which files
    description: str = ""
    source: Path | None = None
    # the detection seam's name for this method (napari_disyre.detection.detectors)
    kind: ClassVar[str] = METHOD

    def __post_init__(self) -> None:
        self.channel_names()  # refuses names for more or fewer contrasts than the autoencoder's channels

    def channel_names(self) -> tuple[str, ...]:
        """The input channels by name, in order (see :func:`~napari_disyre.checkpoint_files.channel_names`)."""
        return channel_names(self.contrasts, self.autoencoder.config.in_channels, self.name)

    @property
    def name(self) -> str:
        return self.source.name if self.source is not None else "in-memory model"

    @property
    def spec(self) -> Preprocessing:
        """The voxel grid, intensity scaling and slicing axis of the training data."""
        try:
            return Preprocessing.from_dict(self.preprocessing)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.name}: malformed preprocessing in {METADATA_FILE} ({exc})."
            ) from exc

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for m in (self.autoencoder, self.unet) for p in m.parameters())

    def summary(self) -> str:
        """One line for the widget and the CLI."""
        ae = self.autoencoder.config
        return (
            f"{self.name}: masked Bernoulli diffusion, {self.n_parameters / 1e6:.1f} M parameters, "
            f"{ae.in_channels} channel(s) {ae.image_size}x{ae.image_size}, "
            f"{ae.codebook_bits}-bit {ae.latent_size}x{ae.latent_size} code, "
            f"L={self.inference.noise_level}, P={self.inference.threshold:g}, "
            f"{self.schedule.forward} forward process"
        )

    def fingerprint(self) -> str:
        """The model by its content: both networks' weights and configs, the schedule, L/P, preprocessing."""
        parts = [
            self.autoencoder.config.to_dict(),
            self.unet_config.to_dict(),
            dataclasses.asdict(self.schedule),
            self.inference.record(),
            self.preprocessing,
        ]
        return content_fingerprint(parts, {"autoencoder.": self.autoencoder, "unet.": self.unet})

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "method": METHOD,
            **({"contrasts": list(self.contrasts)} if self.contrasts else {}),  # one channel: as before
            "autoencoder": self.autoencoder.config.to_dict(),
            "latent_unet": self.unet_config.to_dict(),
            "schedule": self.schedule.to_dict(),
            "inference": {
                "noise_level": self.inference.noise_level,
                "threshold": self.inference.threshold,
                "sample_code": self.inference.sample_code,
                "seed": self.inference.seed,
            },
            "preprocessing": self.preprocessing,
            "healthy_score_quantiles": self.healthy_score_quantiles,
            "training": self.training,
            "origin": self.origin,
            "description": self.description,
        }


def save_berdiff(path: str | Path, model: BerDiffModel, *, overwrite: bool = False) -> Path:
    """Write the folder atomically; an existing one is replaced only with ``overwrite``."""
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.mkdir()
        write_berdiff_files(tmp, model)
    return path


def write_berdiff_files(folder: Path, model: BerDiffModel) -> None:
    """The three files into an existing ``folder``, each replaced atomically (a training run's
    folder also holds its ``training/`` state, which saving must keep)."""
    from safetensors.torch import save_file

    for name, module in ((AE_WEIGHTS, model.autoencoder), (UNET_WEIGHTS, model.unet)):
        state = {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}
        with atomic_output(folder / name, overwrite=True) as tmp:
            save_file(state, str(tmp))
    with atomic_output(folder / METADATA_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(model.metadata(), indent=2) + "\n")


def load_berdiff(path: str | Path) -> BerDiffModel:
    """Load a folder written by :func:`save_berdiff`; every problem is a CheckpointError naming it."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise CheckpointError(
            f"{folder}: {'not found' if not folder.exists() else 'is a file'}; a Bernoulli diffusion "
            f"checkpoint is a folder holding {METADATA_FILE}, {AE_WEIGHTS} and {UNET_WEIGHTS}."
        )
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file():
        found = (
            "a DISYRE checkpoint (disyre.json / unet/)"
            if (folder / "unet").is_dir() or (folder / "disyre.json").is_file()
            else "no berdiff.json"
        )
        raise CheckpointError(f"{folder}: not a Bernoulli diffusion checkpoint: found {found}.")
    meta = read_berdiff_metadata(folder)
    try:
        ae_config = AutoencoderConfig.from_dict(meta["autoencoder"])
        unet_config = LatentUNetConfig.from_dict(meta["latent_unet"])
        schedule = BernoulliSchedule.from_dict(meta["schedule"])
        inference = InferenceSettings(**meta.get("inference", {}))
    except (KeyError, TypeError, ValueError, DisyreError) as exc:  # DisyreError: an impossible network
        raise CheckpointError(f"{meta_path}: malformed configuration ({type(exc).__name__}: {exc}).") from exc
    ae = BinaryAutoencoder(ae_config)
    load_strict(ae, _read_weights(folder / AE_WEIGHTS), str(folder / AE_WEIGHTS))
    unet = build_latent_unet(unet_config)
    load_strict(unet, _read_weights(folder / UNET_WEIGHTS), str(folder / UNET_WEIGHTS))
    return BerDiffModel(
        autoencoder=ae.float().eval(),
        unet=unet.float().eval(),
        unet_config=unet_config,
        contrasts=recorded_contrasts(meta),
        schedule=schedule,
        inference=inference,
        preprocessing=dict(meta.get("preprocessing", {})),
        healthy_score_quantiles={
            str(k): float(v) for k, v in meta.get("healthy_score_quantiles", {}).items()
        },
        training=dict(meta.get("training", {})),
        origin=dict(meta.get("origin", {})),
        description=str(meta.get("description", "")),
        source=folder,
    )


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: weights file missing; the checkpoint folder is incomplete.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated weights ({exc}).") from exc
