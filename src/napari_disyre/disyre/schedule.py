"""The DISYRE corruption schedule: betas, the level-to-timestep map and the inference timesteps.

DISYRE borrows a diffusion scheduler only for its bookkeeping: a corruption level ``a`` in [0, 1] is
tied to a timestep through ``sqrt(alphas_cumprod)``, and inference walks the timesteps with a
cold-diffusion update. Everything here is numpy, with torch used only (imported inside the function
that needs it) to round the schedule to float32 exactly as the official scheduler's tensors do, so
that it can be tested against the numbers the method document gives, and so that no code of the
official repository is needed to read its ``scheduler_config.json``.

The official scheduler has two quirks that change anomaly maps, so ``spacing="official"`` keeps them:

* ``prev(t) = t - T // S`` is *not* the next timestep of the list when S does not divide T;
* the trailing timesteps come from a floating-point ``arange`` that, for S in {29, 31, 58, 62, 97}
  with T = 100, yields S + 1 timesteps ending in ``t = -1`` (which indexes the schedule from its end).

``spacing="exact"`` is the cleaner alternative: exactly S timesteps, each step's ``prev`` is the next
timestep in the list and the last one's is -1. It is never chosen silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import CheckpointError

Spacing = Literal["official", "exact"]

#: Scheduler settings of the official implementation (DISYREScheduler defaults).
OFFICIAL_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DISYREScheduler",
    "num_train_timesteps": 100,
    "beta_start": 1e-3,
    "beta_end": 0.2,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": True,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "timestep_spacing": "trailing",
    "steps_offset": 0,
    "anomaly_score_ssim": False,
}


@dataclass(frozen=True)
class InferenceStep:
    """One network evaluation of the restoration chain.

    ``s_t`` and ``s_prev`` are ``flip(sqrt(alphas_cumprod))`` at ``t`` and ``prev`` (``s_prev`` is 0
    when ``prev < 0``); ``final`` marks ``prev <= 0``, where the restoration becomes ``clamp(x0)``.
    """

    t: int
    prev: int
    s_t: float
    s_prev: float

    @property
    def final(self) -> bool:
        return self.prev <= 0


#: More timesteps than any diffusion schedule uses (DISYRE: 100).
MAX_TIMESTEPS = 100_000


@dataclass(frozen=True)
class Schedule:
    """A linear (or scaled-linear / sigmoid) beta schedule with T timesteps, read from a config."""

    num_train_timesteps: int = 100
    beta_start: float = 1e-3
    beta_end: float = 0.2
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.num_train_timesteps <= MAX_TIMESTEPS:
            raise CheckpointError(
                f"num_train_timesteps must be 1 to {MAX_TIMESTEPS}, got {self.num_train_timesteps}."
            )
        betas = self.trained_betas if self.trained_betas is not None else (self.beta_start, self.beta_end)
        if not all(0 < b < 1 for b in betas):  # NaN fails too: it would make every map NaN
            raise CheckpointError("betas must lie strictly between 0 and 1 (noise variances).")
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise CheckpointError(
                f"trained_betas has {len(self.trained_betas)} values for {self.num_train_timesteps} timesteps."
            )
        if self.trained_betas is None and self.beta_schedule not in ("linear", "scaled_linear", "sigmoid"):
            raise CheckpointError(
                f"Unknown beta_schedule {self.beta_schedule!r}; DISYRE schedulers use 'linear' "
                "('scaled_linear' and 'sigmoid' are also understood)."
            )

    # -- the schedule itself ---------------------------------------------------------------------
    @cached_property
    def betas(self) -> np.ndarray:
        """Betas in float32, computed with torch exactly as the official scheduler does."""
        import torch

        T = self.num_train_timesteps
        if self.trained_betas is not None:
            return np.asarray(self.trained_betas, dtype=np.float32)
        if self.beta_schedule == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, T, dtype=torch.float32)
        elif self.beta_schedule == "scaled_linear":
            betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, T, dtype=torch.float32) ** 2
        else:
            x = torch.linspace(-6, 6, T)
            betas = torch.sigmoid(x) * (self.beta_end - self.beta_start) + self.beta_start
        return betas.numpy()

    @cached_property
    def sqrt_alphas_cumprod(self) -> np.ndarray:
        """``sqrt(cumprod(1 - beta))`` in float32: about 1 at t = 0 and 0.005 at t = 99."""
        import torch

        alphas = 1.0 - torch.from_numpy(self.betas)
        return torch.sqrt(torch.cumprod(alphas, dim=0)).numpy()

    def level_to_timestep(self, level: np.ndarray | float) -> np.ndarray:
        """Training target timestep of a corruption level: the t whose sqrt(alphas_cumprod) is nearest.

        A strong corruption (level near 1) maps to a small t; an untouched slice (level 0) to T - 1.
        """
        level = np.atleast_1d(np.asarray(level, dtype=np.float32))
        return np.abs(self.sqrt_alphas_cumprod[None, :] - level[:, None]).argmin(axis=1)

    # -- inference ---------------------------------------------------------------------------------
    def timesteps(self, steps: int, spacing: Spacing = "official") -> np.ndarray:
        """The timesteps an S-step restoration visits, first to last (S = 4, T = 100: 99, 74, 49, 24)."""
        T = self.num_train_timesteps
        if not 1 <= steps <= T:
            raise ValueError(f"The number of restoration steps must be between 1 and {T}, got {steps}.")
        if spacing == "official":
            return np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1
        if spacing == "exact":
            return np.array([round(T - i * T / steps) - 1 for i in range(steps)], dtype=np.int64)
        raise ValueError(f"Unknown timestep spacing {spacing!r}: use 'official' or 'exact'.")

    def plan(self, steps: int, spacing: Spacing = "official") -> list[InferenceStep]:
        """Every network evaluation of an S-step restoration with its cold-diffusion coefficients."""
        ts = self.timesteps(steps, spacing)
        flipped = self.sqrt_alphas_cumprod[::-1]
        plan = []
        for i, t in enumerate(ts):
            if spacing == "official":
                prev = int(t) - self.num_train_timesteps // steps
            else:
                prev = int(ts[i + 1]) if i + 1 < len(ts) else -1
            # Negative indices wrap around as in the official torch indexing (only t = -1 occurs).
            s_t = float(flipped[int(t)])
            s_prev = float(flipped[prev]) if prev >= 0 else 0.0
            plan.append(InferenceStep(t=int(t), prev=prev, s_t=s_t, s_prev=s_prev))
        return plan

    # -- (de)serialisation -----------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "scheduler config") -> Schedule:
        """Build from a diffusers-style ``scheduler_config.json`` dict (unknown keys are kept, not used)."""
        try:
            T = int(config.get("num_train_timesteps", 100))
            betas = config.get("trained_betas")
            spacing = config.get("timestep_spacing", "trailing")
            if spacing != "trailing":
                raise CheckpointError(
                    f"{source}: timestep_spacing is {spacing!r}, but DISYRE inference is defined for "
                    "'trailing' spacing only. Re-export the checkpoint with the DISYRE scheduler."
                )
            return cls(
                num_train_timesteps=T,
                beta_start=float(config.get("beta_start", 1e-3)),
                beta_end=float(config.get("beta_end", 0.2)),
                beta_schedule=str(config.get("beta_schedule", "linear")),
                trained_betas=tuple(float(b) for b in betas) if betas is not None else None,
                config=dict(config),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{source}: malformed scheduler settings ({exc}).") from exc
        except CheckpointError as exc:  # raised without the file's name by the checks above
            if str(exc).startswith(source):
                raise
            raise CheckpointError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: Path) -> Schedule:
        try:
            config = json.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise CheckpointError(f"{path}: scheduler config not found.") from exc
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read the scheduler config ({exc.strerror}).") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc}).") from exc
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: expected a JSON object with the scheduler settings.")
        return cls.from_config(config, source=str(path))

    def to_config(self) -> dict[str, Any]:
        """A scheduler_config.json the official DISYREScheduler can load."""
        config = dict(OFFICIAL_SCHEDULER_CONFIG)
        config.update(self.config)
        config.update(
            num_train_timesteps=self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule=self.beta_schedule,
            trained_betas=list(self.trained_betas) if self.trained_betas is not None else None,
            timestep_spacing="trailing",
        )
        return config
