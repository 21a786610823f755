"""Bernoulli diffusion on binary codes: schedule, forward process, posterior, flip-probability
parametrisation and loss (method document §3.1-3.2).

Two forward processes are offered, because the official code does not run what its paper writes:

* ``"code"`` (default): ``P(x_t = 1 | x_0) = abar_t x_0``, what the official code executes (the
  ``+ (1 - abar_t) / 2`` term sits on a dead line). A 1-bit decays to 0; a 0-bit never changes.
  Needed to reproduce, or fine-tune, models trained with that code.
* ``"symmetric"``: ``abar_t x_0 + (1 - abar_t) / 2``, the process the paper intends, which the
  posterior assumes in both variants.

The choice is stored in the checkpoint (``BernoulliSchedule.to_dict``) so inference noises codes as
training did. Timesteps are 0-based (``abar[0] = 1 - beta[0]``) and reach the network unscaled.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from ..errors import DisyreError

ForwardProcess = Literal["code", "symmetric"]
FORWARD_PROCESSES: tuple[str, ...] = ("code", "symmetric")
#: Flip probabilities are clamped before the log, as the official loss does.
BCE_EPS = 1e-7


@dataclass(frozen=True)
class BernoulliSchedule:
    """Linear betas from ``beta_start`` to ``beta_end`` over ``steps`` timesteps."""

    steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    forward: ForwardProcess = "code"

    def __post_init__(self) -> None:
        if self.forward not in FORWARD_PROCESSES:
            raise DisyreError(
                f"unknown forward process {self.forward!r}; choose one of {', '.join(FORWARD_PROCESSES)}"
            )
        if self.steps < 2 or not 0 < self.beta_start <= self.beta_end < 1:
            raise DisyreError(
                f"invalid Bernoulli schedule: steps={self.steps}, betas {self.beta_start}..{self.beta_end}"
            )

    @property
    def betas(self) -> torch.Tensor:
        return torch.linspace(self.beta_start, self.beta_end, self.steps, dtype=torch.float64)

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """``abar[t] = prod_{j <= t} (1 - beta_j)``, float64."""
        return torch.cumprod(self.alphas, dim=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BernoulliSchedule:
        return cls(
            steps=int(d["steps"]),
            beta_start=float(d["beta_start"]),
            beta_end=float(d["beta_end"]),
            forward=d.get("forward", "code"),
        )

    def check_timestep(self, t: int) -> None:
        if not 0 <= t < self.steps:
            raise DisyreError(f"timestep {t} is outside the schedule's 0..{self.steps - 1}")


def _per_sample(values: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` shaped to broadcast over ``like`` (B, ...), in ``like``'s dtype and device."""
    index = torch.as_tensor(t, device=values.device).long()
    picked = values[index].to(device=like.device, dtype=like.dtype)
    return picked.reshape(-1, *([1] * (like.ndim - 1))) if picked.ndim else picked


def forward_probability(schedule: BernoulliSchedule, x0: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """``P(x_t = 1 | x_0)`` for the schedule's forward process; ``t`` an int or one per sample."""
    abar = _per_sample(schedule.alphas_cumprod, t, x0)
    p = abar * x0
    return p + (1 - abar) / 2 if schedule.forward == "symmetric" else p


def posterior_probability(
    schedule: BernoulliSchedule, x0_hat: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int
) -> torch.Tensor:
    """``P(x_{t-1} = 1 | x_t, x0_hat)`` for t >= 1 (symmetric-process posterior; x0_hat may be soft).

    theta1 = [a_t (1-x_t) + (1-a_t)/2] [abar_{t-1} (1-x0) + (1-abar_{t-1})/2]
    theta2 = [a_t x_t + (1-a_t)/2] [abar_{t-1} x0 + (1-abar_{t-1})/2];   result theta2 / (theta1 + theta2)
    """
    if torch.as_tensor(t).min() < 1:
        raise DisyreError("the posterior is defined for t >= 1; step 0 returns x0 itself")
    a = _per_sample(schedule.alphas, t, x_t)
    abar_prev = _per_sample(schedule.alphas_cumprod, torch.as_tensor(t) - 1, x_t)
    theta1 = (a * (1 - x_t) + (1 - a) / 2) * (abar_prev * (1 - x0_hat) + (1 - abar_prev) / 2)
    theta2 = (a * x_t + (1 - a) / 2) * (abar_prev * x0_hat + (1 - abar_prev) / 2)
    return theta2 / (theta1 + theta2)


def x0_from_flip_probability(x_t: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """``P(x_0 = 1) = |x_t - flip|``: a bit that is 1 stays 1 unless flipped, and the reverse."""
    return (x_t - flip).abs()


def bce_bits(flip: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy in bits, averaged over every axis but the first: one value per sample."""
    p = flip.clamp(BCE_EPS, 1 - BCE_EPS)
    nats = -(target * torch.log(p) + (1 - target) * torch.log(1 - p))
    return nats.flatten(1).mean(1) / math.log(2)


def training_loss(
    flip_model: Any,
    schedule: BernoulliSchedule,
    x0: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean BCE (bits) of the predicted flip probabilities at uniform timesteps (method doc §3.2).

    ``flip_model(x_t, t)`` returns flip probabilities in (0, 1); ``x0`` is a batch of binary codes.
    The target is the true flip indicator ``|x_t - x_0|``.
    """
    t = torch.randint(0, schedule.steps, (x0.shape[0],), device=x0.device, generator=generator)
    x_t = torch.bernoulli(forward_probability(schedule, x0, t), generator=generator)
    return bce_bits(flip_model(x_t, t), (x_t - x0).abs()).mean()
