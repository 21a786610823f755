"""The restoration engine: S-step DISYRE restoration of a stack of 2D slices, window by window.

Per window ``x`` and step (method document, "Inference"): ``x0 = unet(x, t)``; the step score
``|x - x0|`` accumulates; the cold-diffusion update moves ``x`` towards ``x0`` (or sets
``x = clamp(x0)`` at the last step). ``mean-single-step`` restores the original window at every
timestep, ``multi-step-restoration`` carries ``x`` on. The anomaly score is the summed step scores
divided by S, times the window's foreground fraction (``weight_foreground``), and zero where the final
``x`` is zero; windows are blended with the Gaussian importance map.

Unlike the official code, which runs one slice (or one window) at a time, the windows of ALL slices
are pooled and sent through the network in batches as large as memory allows; an out-of-memory error
halves the batch and retries the same windows. Windows whose input is entirely zero are skipped when
that provably leaves the anomaly map unchanged (their score is multiplied by zero).

:func:`restore` is a generator: it yields a :class:`Progress` after every batch (the caller may stop
iterating to cancel) and one carrying the blended restoration at the end of every step; its return
value is the :class:`Restoration`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .devices import auto_batch_size, inference_context, is_out_of_memory, release_cached_memory
from .errors import DisyreError
from .methods import METHODS, Method
from .schedule import InferenceStep, Schedule, Spacing
from .windows import WindowLayout, sample_size_pair, window_layout

if TYPE_CHECKING:
    import torch
    from diffusers import UNet2DModel

T = TypeVar("T")


@dataclass(frozen=True)
class RestorationSettings:
    """How to restore: the paper's evaluation default is mean-single-step with S = 4."""

    steps: int = 4
    method: Method = "mean-single-step"
    spacing: Spacing = "official"
    weight_foreground: bool = True
    overlap: float = 0.25
    sigma_scale: float = 0.125

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DisyreError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.steps < 1:
            raise DisyreError(f"the number of restoration steps must be at least 1, got {self.steps}")
        if not 0 < self.overlap <= 1:
            raise DisyreError(f"overlap must be in (0, 1], got {self.overlap}")


@dataclass
class Progress:
    """Where a restoration stands. ``restoration`` is set once per step, when the step completes."""

    step: int  # 1-based index of the step being run
    n_steps: int
    windows_done: int  # in this step
    windows_total: int  # per step
    batch_size: int
    restoration: np.ndarray | None = None  # (N, H, W) blended x0 of the completed step, in [0, 1]

    @property
    def fraction(self) -> float:
        total = self.n_steps * max(self.windows_total, 1)
        return ((self.step - 1) * self.windows_total + self.windows_done) / total

    def describe(self) -> str:
        return f"step {self.step}/{self.n_steps}, windows {self.windows_done}/{self.windows_total}"


@dataclass
class Restoration:
    """What a restoration produced, on the (N, H, W) slice stack it was given."""

    anomaly_map: np.ndarray  # float32
    final: np.ndarray  # blended final x (the input for mean-single-step), float32
    restorations: list[np.ndarray] = field(default_factory=list)  # per step, blended clamp(x0)
    timesteps: list[int] = field(default_factory=list)
    windows_run: int = 0  # network evaluations
    windows_skipped: int = 0  # all-zero windows per step
    batch_size: int = 0
    seconds: float = 0.0
    flip_mask: np.ndarray | None = None  # Bernoulli diffusion only: masked fraction of latent bits


def restore(
    slices: np.ndarray,
    unet: UNet2DModel,
    schedule: Schedule,
    settings: RestorationSettings = RestorationSettings(),
    *,
    device: torch.device | None = None,
    autocast: torch.dtype | None = None,
    batch_size: int | None = None,
    keep_restorations: bool = True,
) -> Generator[Progress, None, Restoration]:
    """Restore a stack of slices (N, H, W), float32 in [0, 1] with a zero background.

    The network is moved to ``device`` (default: the CPU) and evaluated under ``autocast`` (None:
    float32). ``batch_size`` None chooses it from free memory. Stop iterating to cancel: the work
    stops after the current batch.
    """
    import torch

    started = time.perf_counter()
    device = device or torch.device("cpu")
    slices = np.asarray(slices, dtype=np.float32)
    if slices.ndim != 3:
        raise ValueError(f"expected a stack of slices (N, H, W), got shape {slices.shape}")
    window = _window_of(unet)
    layout = window_layout(slices.shape[1:], window, settings.overlap, settings.sigma_scale)
    plan = schedule.plan(settings.steps, settings.spacing)
    padded = layout.pad(slices)
    jobs = _window_jobs(padded, layout)
    if settings.method == "mean-single-step" or settings.weight_foreground:
        skipped = int((~jobs.nonzero).sum())
        jobs = jobs.select(jobs.nonzero)
    else:
        skipped = 0

    unet.to(device).eval()
    batch = batch_size or auto_batch_size(
        device, _bytes_per_window(unet, window, device, autocast), len(jobs)
    )
    runner = _BatchRunner(unet, device, autocast, batch)
    state = jobs.inputs(padded).copy() if settings.method == "multi-step-restoration" else None
    score = np.zeros((len(jobs), *window), dtype=np.float32)
    restorations: list[np.ndarray] = []

    for index, step in enumerate(plan, start=1):
        accumulated = (
            np.zeros((len(slices), *layout.padded_size), dtype=np.float32) if keep_restorations else None
        )
        for chunk, x, x0 in runner.run(jobs, padded, state, step):
            score[chunk] += np.abs(x - x0)
            if state is not None:
                state[chunk] = cold_diffusion_update(x, x0, step)
            if accumulated is not None:
                jobs.accumulate(accumulated, np.clip(x0, 0, 1), layout, chunk)
            yield Progress(index, len(plan), chunk.stop, len(jobs), runner.batch_size)
        if accumulated is not None:
            restorations.append(layout.blend(accumulated))
        yield Progress(
            index,
            len(plan),
            len(jobs),
            len(jobs),
            runner.batch_size,
            restorations[-1] if restorations else None,
        )

    final_windows = state if state is not None else jobs.inputs(padded)
    score /= settings.steps
    if settings.weight_foreground:
        score *= (jobs.inputs(padded) > 0).mean(axis=(1, 2), dtype=np.float32)[:, None, None]
    score *= final_windows > 0
    anomaly = np.zeros((len(slices), *layout.padded_size), dtype=np.float32)
    jobs.accumulate(anomaly, score, layout)
    if state is not None:
        final_acc = np.zeros_like(anomaly)
        jobs.accumulate(final_acc, state, layout)
        final = layout.blend(final_acc)
    else:
        final = slices.copy()
    return Restoration(
        anomaly_map=layout.blend(anomaly),
        final=final,
        restorations=restorations,
        timesteps=[s.t for s in plan],
        windows_run=len(jobs) * len(plan),
        windows_skipped=skipped,
        batch_size=runner.batch_size,
        seconds=time.perf_counter() - started,
    )


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


def cold_diffusion_update(x: np.ndarray, x0: np.ndarray, step: InferenceStep) -> np.ndarray:
    """One cold-diffusion step from timestep t to prev(t); at the last step, ``clamp(x0)``."""
    if step.final:
        return np.clip(x0, 0.0, 1.0)
    s_t = np.float32(step.s_t)
    s_prev = np.float32(step.s_prev)
    x_T = (x - x0 * (1 - s_t)) / s_t
    x_t = x0 * (1 - s_t) + s_t * x_T
    x_prev = x0 * (1 - s_prev) + s_prev * x_T
    return np.clip(x - x_t + x_prev, 0.0, 1.0)


# -- windows of all slices ------------------------------------------------------------------------


@dataclass
class _Jobs:
    """The (slice, window origin) pairs to run, in the order they are batched."""

    slice_index: np.ndarray  # (K,)
    origin_y: np.ndarray
    origin_x: np.ndarray
    nonzero: np.ndarray  # (K,) bool, window input has a non-zero pixel
    window: tuple[int, int]

    def __len__(self) -> int:
        return len(self.slice_index)

    def select(self, keep: np.ndarray) -> _Jobs:
        return _Jobs(
            self.slice_index[keep], self.origin_y[keep], self.origin_x[keep], self.nonzero[keep], self.window
        )

    def inputs(self, padded: np.ndarray, chunk: slice = slice(None)) -> np.ndarray:
        """The input windows (k, h, w) of the jobs in ``chunk`` (all by default)."""
        h, w = self.window
        out = np.empty((len(range(len(self))[chunk]), h, w), dtype=np.float32)
        for j, i in enumerate(range(len(self))[chunk]):
            y, x = self.origin_y[i], self.origin_x[i]
            out[j] = padded[self.slice_index[i], y : y + h, x : x + w]
        return out

    def accumulate(
        self, target: np.ndarray, values: np.ndarray, layout: WindowLayout, chunk: slice = slice(None)
    ) -> None:
        """Add importance-weighted window ``values`` into the padded stack ``target``."""
        h, w = self.window
        for j, i in enumerate(range(len(self))[chunk]):
            y, x = self.origin_y[i], self.origin_x[i]
            target[self.slice_index[i], y : y + h, x : x + w] += values[j] * layout.importance


def _window_jobs(padded: np.ndarray, layout: WindowLayout) -> _Jobs:
    n = padded.shape[0]
    origins = np.array(layout.origins, dtype=np.int64)
    slice_index = np.repeat(np.arange(n), len(origins))
    oy = np.tile(origins[:, 0], n)
    ox = np.tile(origins[:, 1], n)
    h, w = layout.window
    # A window is non-zero if any pixel in it is: a summed-area table answers this for all at once.
    occupied = np.pad((padded != 0).cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    counts = (
        occupied[slice_index, oy + h, ox + w]
        - occupied[slice_index, oy, ox + w]
        - occupied[slice_index, oy + h, ox]
        + occupied[slice_index, oy, ox]
    )
    return _Jobs(slice_index, oy, ox, counts > 0, layout.window)


# -- batched network evaluation with out-of-memory fallback ----------------------------------------


class _BatchRunner:
    """Runs the network on consecutive chunks of windows; halves the batch on out-of-memory."""

    def __init__(
        self, unet: UNet2DModel, device: torch.device, autocast: torch.dtype | None, batch_size: int
    ):
        self.unet = unet
        self.device = device
        self.autocast = autocast
        self.batch_size = max(1, batch_size)

    def run(
        self, jobs: _Jobs, padded: np.ndarray, state: np.ndarray | None, step: InferenceStep
    ) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        """Yield ``(chunk, x, unet(x, t))`` for consecutive chunks of the jobs."""
        start = 0
        while start < len(jobs):
            chunk = slice(start, min(start + self.batch_size, len(jobs)))
            x = state[chunk] if state is not None else jobs.inputs(padded, chunk)
            try:
                x0 = self.predict(x, step.t)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                release_cached_memory(self.device)
                if self.batch_size == 1:
                    raise DisyreError(
                        f"out of memory on {self.device} even with one window per batch. Free memory (close other "
                        "programs or viewers), or use --device cpu."
                    ) from exc
                self.batch_size //= 2
                continue
            yield chunk, x, x0
            start = chunk.stop

    def predict(self, x: np.ndarray, t: int) -> np.ndarray:
        """``unet(x, t)`` for a batch of windows (k, h, w), returned as float32 numpy."""
        import torch

        with inference_context(self.device, self.autocast):
            batch = torch.from_numpy(np.ascontiguousarray(x))[:, None].to(self.device)
            timesteps = torch.full((batch.shape[0],), t, dtype=torch.long, device=self.device)
            out = self.unet(batch, timesteps).sample[:, 0]
        return out.float().cpu().numpy()


def _window_of(unet: UNet2DModel) -> tuple[int, int]:
    return sample_size_pair(unet.config.sample_size)


def _bytes_per_window(
    unet: UNet2DModel, window: tuple[int, int], device: torch.device, autocast: torch.dtype | None
) -> int:
    """Peak memory one window costs: measured on CUDA, estimated from the widest layers elsewhere."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        runner = _BatchRunner(unet, device, autocast, 1)
        runner.predict(np.zeros((2, *window), dtype=np.float32), 50)
        return max(1, (torch.cuda.max_memory_allocated(device) - before) // 2)
    channels = max(unet.config.block_out_channels)
    # a few activations of the widest block at full resolution dominate; 4 bytes each
    return int(window[0] * window[1] * channels * 4 * 6)
