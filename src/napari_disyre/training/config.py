"""The configuration of a training run, saved as ``training/config.json`` beside the checkpoint.

``None`` fields take the preset's value (:mod:`~napari_disyre.training.presets`), so that a config
records what the user chose and :meth:`TrainingConfig.resolved` what the run actually used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from ..scans.preprocessing import Preprocessing
from ..validation import TrainingOptions, check
from .presets import get_preset


@dataclass
class TrainingConfig:
    """Everything that defines a training run (saved as ``training/config.json``).

    ``None`` fields take the preset's value. ``unet_overrides`` changes the preset's network (tests
    use a tiny one). ``contrasts`` (two or more) makes it a network of that many channels.
    """

    preset: str = "small"
    steps: int | None = None
    batch_size: int | None = None
    crop: int | None = None
    learning_rate: float = 1e-4
    adam_betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 1e-6
    adam_epsilon: float = 1e-8
    warmup_steps: int | None = None
    grad_clip: float = 1.0
    ema: bool = False
    ema_max_decay: float = 0.9999
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75
    validate_every: int = 500
    save_every: int = 1000
    log_every: int = 10
    validation_examples: int = 64
    seed: int = 0
    contrast: str | None = None
    contrasts: tuple[str, ...] = ()  # several contrasts: the network's channels by name, in order
    spacing: tuple[float, float, float] | None = None
    orientation: str | None = None
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None  # processes making training batches (None: 0 on the CPU, more on a GPU)
    init: str | None = None  # a checkpoint to start from (fine-tuning): its network, weights, grid
    description: str = ""
    unet_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every number through the validation layer: a NaN or absurd learning rate, 0 or 2.5 steps,
        a crop the network cannot halve are refused here, before any scan is read."""
        names = set(TrainingOptions.model_fields)
        check(TrainingOptions, {k: v for k, v in asdict(self).items() if k in names}, "TrainingConfig")

    def resolved(self) -> TrainingConfig:
        """A copy with every preset-dependent field filled in."""
        preset = get_preset(self.preset)
        steps = self.steps or preset.steps
        return dataclasses.replace(
            self,
            steps=steps,
            batch_size=self.batch_size or preset.batch_size,
            crop=self.crop or preset.crop,
            warmup_steps=self.warmup_steps
            if self.warmup_steps is not None
            else min(preset.warmup_steps, steps // 10),
            spacing=self.spacing or preset.preprocessing.spacing,
            orientation=self.orientation or preset.preprocessing.orientation,
        )

    @property
    def preprocessing(self) -> Preprocessing:
        base = get_preset(self.preset).preprocessing
        return dataclasses.replace(
            base, spacing=self.spacing or base.spacing, orientation=self.orientation or base.orientation
        )

    @property
    def channels(self) -> int:
        return max(1, len(self.contrasts))

    @property
    def unet_config(self) -> dict[str, Any]:
        channels = {"in_channels": self.channels, "out_channels": self.channels} if self.contrasts else {}
        return {**get_preset(self.preset).unet, **channels, **self.unet_overrides}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        for key in ("adam_betas", "spacing", "contrasts"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)
