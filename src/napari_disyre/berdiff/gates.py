"""Quality gates: a Bernoulli diffusion run is called done, and its checkpoint shippable, only when
both networks learned something measurable on held-out slices.

Why: a latent UNet that has learned nothing still runs end to end, and its maps are then only the
autoencoder's reconstruction error (the first bundled model: 0.264 bits at t = 99 against 0.243 for
a constant guess; AUROC 0.357 on the demo). So, on the codes of held-out (validation) slices, at
fixed timesteps with fixed noise:

* **latent UNet**: its mean BCE (bits) must beat the *per-channel trivial guess* by
  ``unet_margin_bits``. The trivial guess predicts, for each latent channel and timestep, one
  constant flip probability: the observed flip rate of that channel on these very codes (the best
  constant there is, so a network that ignores its input cannot beat it);
* **autoencoder**: its mean absolute error (decoding a sampled code, as inference does) over the
  held-out slices' foreground pixels (above 0) must stay below ``ae_max_error`` (intensities in
  [0, 1]).

The thresholds and the measured values are written into ``berdiff.json`` (``training.quality_gates``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .autoencoder import BinaryAutoencoder
from .bernoulli import BCE_EPS, BernoulliSchedule, bce_bits, forward_probability
from .inference import FlipModel


@dataclass(frozen=True)
class QualityGates:
    """Thresholds of the gates and the fixed timesteps the UNet is measured at."""

    unet_margin_bits: float = 0.01
    ae_max_error: float = 0.05
    timesteps: tuple[int, ...] = (99, 299, 499)
    seed: int = 0
    max_slices: int = 256  # evenly spaced among the held-out slices, to bound the time it takes
    batch_size: int = 32


@dataclass
class GateReport:
    """What the gates measured, and whether the run passes."""

    gates: QualityGates
    held_out_slices: int
    ae_error: float = math.nan
    unet_bits: float = math.nan
    trivial_bits: float = math.nan
    per_timestep: dict[str, tuple[float, float]] = field(default_factory=dict)  # t: (unet, trivial)

    def failures(self) -> list[str]:
        """One phrase per failed gate; empty when the run passes."""
        if not self.held_out_slices:
            return ["no held-out slices to measure the gates on (give --val-count or --val-dir)"]
        out = []
        if not self.unet_bits <= self.trivial_bits - self.gates.unet_margin_bits:
            out.append(
                f"latent UNet held-out loss {self.unet_bits:.4f} bits does not beat the per-channel "
                f"trivial guess {self.trivial_bits:.4f} by {self.gates.unet_margin_bits:g}"
            )
        if not self.ae_error < self.gates.ae_max_error:
            out.append(
                f"autoencoder held-out error {self.ae_error:.4f} is not below {self.gates.ae_max_error:g}"
            )
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: values not measured (no held-out slices) are None, not NaN."""
        measured = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}
        return {**measured, "passed": self.passed, "failures": self.failures()}


def latent_losses(
    flip_model: FlipModel,
    schedule: BernoulliSchedule,
    codes: torch.Tensor,
    t: int,
    generator: torch.Generator,
    batch: int = 32,
) -> tuple[float, float]:
    """(model, per-channel trivial guess) mean BCE in bits at timestep ``t`` on binary ``codes``
    (B, bits, h, w), both on the same draw of x_t."""
    x_t = torch.bernoulli(forward_probability(schedule, codes, t), generator=generator)
    target = (x_t - codes).abs()
    with torch.no_grad():
        flips = torch.cat(
            [flip_model(x_t[a : a + batch], t).float().cpu() for a in range(0, len(x_t), batch)]
        )
    model = float(bce_bits(flips, target).mean())
    rate = target.mean(dim=(0, 2, 3)).clamp(BCE_EPS, 1 - BCE_EPS).double()
    entropy = -(rate * torch.log2(rate) + (1 - rate) * torch.log2(1 - rate))
    return model, float(entropy.mean())


def autoencoder_error(
    ae: BinaryAutoencoder, images: np.ndarray, codes: torch.Tensor, batch: int = 32
) -> float:
    """Mean |decode(code) - x| over the foreground pixels (x > 0) of ``images`` (N, C, H, W)."""
    x = torch.from_numpy(np.asarray(images, np.float32))
    with torch.no_grad():
        restored = torch.cat(
            [ae.decode(codes[a : a + batch]).float().clamp(0, 1) for a in range(0, len(x), batch)]
        )
    foreground = x > 0
    return float((restored - x).abs()[foreground].mean()) if foreground.any() else math.nan


def evaluate_gates(
    ae: BinaryAutoencoder,
    flip_model: FlipModel,
    schedule: BernoulliSchedule,
    images: np.ndarray,
    gates: QualityGates = QualityGates(),
) -> GateReport:
    """Both gates on held-out slices ``images`` (N, C, H, W) in [0, 1] (CPU, float32)."""
    if len(images) > gates.max_slices:
        images = images[np.linspace(0, len(images) - 1, gates.max_slices).round().astype(int)]
    report = GateReport(gates=gates, held_out_slices=len(images))
    if not len(images):
        return report
    generator = torch.Generator().manual_seed(gates.seed)
    x = torch.from_numpy(np.asarray(images, np.float32))
    with torch.no_grad():
        p = torch.cat(
            [
                ae.bit_probabilities(x[a : a + gates.batch_size]).float()
                for a in range(0, len(x), gates.batch_size)
            ]
        )
    codes = torch.bernoulli(p, generator=generator)  # sampled, as inference samples them
    report.ae_error = autoencoder_error(ae, images, codes, gates.batch_size)
    for t in gates.timesteps:
        report.per_timestep[str(t)] = latent_losses(
            flip_model, schedule, codes, t, generator, gates.batch_size
        )
    report.unet_bits = float(np.mean([m for m, _ in report.per_timestep.values()]))
    report.trivial_bits = float(np.mean([g for _, g in report.per_timestep.values()]))
    return report


def judge_run(model: Any, held_out: np.ndarray | None, gates: QualityGates) -> GateReport:
    """The gates of a trained :class:`~.checkpoint.BerDiffModel` on held-out slices (None: none),
    recorded in its training record; a failed model's description says it is not shippable."""
    from .latent_unet import flip_probability

    images = held_out if held_out is not None else np.zeros((0, 1, 1, 1), np.float32)
    flips = lambda x, t: flip_probability(model.unet, x, t)  # noqa: E731
    report = evaluate_gates(model.autoencoder, flips, model.schedule, images, gates)
    model.training["quality_gates"] = report.to_dict()
    if not report.passed:
        failed = "; ".join(report.failures())
        model.description = f"NOT SHIPPABLE, quality gates failed ({failed}): {model.description}"
    return report
