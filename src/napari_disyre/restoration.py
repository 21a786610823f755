"""What a restoration yields and returns, for both methods: the types the pipeline, the CLI and the
widget consume without knowing which method made them.

Both detectors (``disyre.engine`` and ``berdiff.detector``) import these from here, below them, so
that neither method reaches into the other for a shared type. :func:`run_to_end` drains a progress
generator for callers that do not show progress.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class Progress:
    """Where a restoration stands. ``restoration`` is set once per step, when the step completes."""

    step: int  # 1-based index of the step being run
    n_steps: int
    windows_done: int  # in this step
    windows_total: int  # per step
    batch_size: int
    restoration: np.ndarray | None = None  # (N, H, W) or (N, C, H, W) blended x0 of the step, in [0, 1]
    evaluations_done: int = 0  # network evaluations so far, all steps (0 with the total: unknown)
    evaluations_total: int = 0
    stage: str = ""  # set while no window runs, e.g. the network is exported for ONNX Runtime

    @property
    def fraction(self) -> float:
        if self.evaluations_total:
            return self.evaluations_done / self.evaluations_total
        total = self.n_steps * max(self.windows_total, 1)
        return ((self.step - 1) * self.windows_total + self.windows_done) / total

    def describe(self) -> str:
        if self.stage:
            return self.stage
        return f"step {self.step}/{self.n_steps}, windows {self.windows_done}/{self.windows_total}"


@dataclass
class Restoration:
    """What a restoration produced, on the slice stack it was given: (N, H, W), or (N, C, H, W) for C
    contrasts (then ``restorations`` and ``final`` have the channels, ``anomaly_map`` does not)."""

    anomaly_map: np.ndarray  # float32
    final: np.ndarray  # blended final x (the input for mean-single-step), float32
    restorations: list[np.ndarray] = field(default_factory=list)  # per step, blended clamp(x0)
    step_maps: list[np.ndarray] = field(default_factory=list)  # the map after steps 1..S (last = final)
    timesteps: list[int] = field(default_factory=list)
    windows_run: int = 0  # network evaluations
    windows_skipped: int = 0  # all-zero windows per step
    windows_partial: int = 0  # windows (per step) partly outside the brain: run, and not skippable
    batch_size: int = 0
    seconds: float = 0.0
    flip_mask: np.ndarray | None = None  # Bernoulli diffusion only: masked fraction of latent bits
    #: several contrasts: one map per channel (N, C, H, W), of which ``anomaly_map`` is the combination
    channel_maps: np.ndarray | None = None
    runtime: str = "torch"  # what evaluated the networks: torch or onnxruntime


def run_to_end(
    generator: Generator[Progress, None, T], on_progress: Callable[[Progress], None] | None = None
) -> T:
    """Drain a progress generator (:func:`restore`, ``iter_detect``) and return its result."""
    while True:
        try:
            progress = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(progress)
