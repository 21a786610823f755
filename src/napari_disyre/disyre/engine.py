"""The restoration engine: S-step DISYRE restoration of a stack of 2D slices, window by window.

Per window ``x`` and step (method document, "Inference"): ``x0 = unet(x, t)``; the step score
``|x - x0|`` accumulates; the cold-diffusion update moves ``x`` towards ``x0`` (or sets
``x = clamp(x0)`` at the last step). ``mean-single-step`` restores the original window at every
timestep, ``multi-step-restoration`` carries ``x`` on. The anomaly score is the summed step scores
divided by S, times the window's foreground fraction (``weight_foreground``), and zero where the final
``x`` is zero; windows are blended with the Gaussian importance map.

Several contrasts: a network with C input and output channels restores windows (C, h, w). As in the
official pipeline, the score keeps the input's channels (one map per contrast, each zero where that
channel's final ``x`` is zero); the foreground fraction is taken over all channels of the window
(the share of its C x h x w values that are non-zero). The one voxel map is the MEAN of the channel
maps (:func:`combine_channels`): every contrast counts alike and the scale stays that of one map.
Internally the stack is always (N, C, H, W); a one-channel stack (N, H, W) is given a channel axis of
1, which changes no value (every operation is elementwise or reduces over the same numbers).

The official code pools the windows of all slices and runs the whole S-step chain on chunks of 320
windows in float32 (``benchmarks/official_style.py`` restates it). This engine gives the same maps
faster: batches sized for the device (4 windows on a CPU, from free memory on CUDA; an out-of-memory
error halves the batch and retries), the independent steps of mean-single-step batched together,
windows whose input is entirely zero skipped where that provably leaves the map unchanged (their
score is multiplied by zero), and the network run in channels_last (see ``acceleration``).

:func:`restore` is a generator: it yields a :class:`Progress` after every batch (the caller may stop
iterating to cancel) and one carrying the blended restoration at the end of every step; its return
value is the :class:`Restoration`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DisyreError
from ..restoration import Progress, Restoration
from ..runtime.devices import auto_batch_size
from ..runtime.sessions import LOADING_STAGE, choose_runtime
from ..validation import RestorationOptions, RestoreArguments, check
from .acceleration import BatchRunner, Network, bytes_per_window
from .methods import METHODS, Method
from .restoration_maps import RestorationMaps
from .schedule import InferenceStep, Schedule, Spacing
from .windows import WindowLayout, sample_size_pair, window_layout

if TYPE_CHECKING:
    import torch
    from diffusers import UNet2DModel

#: Multi-step-restoration keeps each window's state for the whole chain; this many windows at a time
#: (128 MiB of state and scores for 128 x 128 windows) bound the memory whatever the volume size.
WINDOWS_PER_CHUNK = 1024
#: Fast mode: the window step as a fraction of the window (the official 0.25 gives 25 windows per
#: 240 x 240 slice with 128 x 128 windows, 0.5 gives 9) and the default step count (see ``fast``).
FAST_OVERLAP = 0.5
FAST_STEPS = 1


@dataclass(frozen=True)
class RestorationSettings:
    """How to restore: the paper's evaluation default is mean-single-step with S = 4."""

    steps: int = 4
    method: Method = "mean-single-step"
    spacing: Spacing = "official"
    weight_foreground: bool = True
    overlap: float = 0.25
    sigma_scale: float = 0.125
    #: Fast mode: windows step by at least FAST_OVERLAP of the window (fewer windows, same blending).
    #: Its step count is chosen where the settings are made (``detection.default_settings``: S =
    #: FAST_STEPS unless asked), and reduced precision where the device has it (bf16 on CUDA).
    fast: bool = False

    def __post_init__(self) -> None:
        check(RestorationOptions, dataclasses.asdict(self), "restoration settings")
        if self.method not in METHODS:
            raise DisyreError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")

    @property
    def window_overlap(self) -> float:
        """The window step as a fraction of the window: ``overlap``, or at least FAST_OVERLAP when fast."""
        return max(self.overlap, FAST_OVERLAP) if self.fast else self.overlap


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
    keep_step_maps: bool = False,
    compile: bool = False,
    runtime: str = "torch",
) -> Generator[Progress, None, Restoration]:
    """Restore a stack of slices (N, H, W), or (N, C, H, W) for a network of C channels, float32 in
    [0, 1] with a zero background.

    The restorations and the final ``x`` have the input's shape; the anomaly map (and the map after
    each step) is (N, H, W): for C channels the mean of the per-channel maps, which
    ``Restoration.channel_maps`` (N, C, H, W) keeps.

    The network is moved to ``device`` (default: the CPU) and evaluated under ``autocast`` (None:
    float32), compiled with ``torch.compile`` when ``compile`` (falling back to eager if that fails).
    ``batch_size`` None chooses it from free memory. Stop iterating to cancel: the work stops after
    the current batch. Memory beyond the input and output stacks is bounded by the batch and, for
    multi-step-restoration, by :data:`WINDOWS_PER_CHUNK` windows of state, whatever the volume size.
    ``keep_step_maps`` also keeps the map after each step, so a viewer can show the score accumulate:
    the step scores so far divided by S, weighted and blended as the final map, which is the last of
    them (S more padded maps in memory). ``runtime`` (torch, onnxruntime or auto) evaluates the
    network (``runtime.sessions``); exporting it for ONNX Runtime is shown as a progress stage.
    """
    import torch

    started = time.perf_counter()
    device = device or torch.device("cpu")
    given = np.asarray(check(RestoreArguments, {"slices": slices, "settings": settings}, "restore").slices, np.float32)
    slices = _with_channel_axis(given, unet.config.in_channels)
    window = _window_of(unet)
    layout = window_layout(slices.shape[2:], window, settings.window_overlap, settings.sigma_scale)
    plan = schedule.plan(settings.steps, settings.spacing)
    padded = layout.pad(slices)
    jobs = _window_jobs(padded, layout)
    partial = int((jobs.nonzero & ~jobs.full).sum())
    single = settings.method == "mean-single-step"
    jobs, skipped = _runnable(jobs, single or settings.weight_foreground)
    runtime = choose_runtime(runtime, device, autocast, compile)
    if runtime == "onnxruntime":
        yield Progress(1, len(plan), 0, len(jobs), 0, stage=LOADING_STAGE)
    network = Network(unet, device, autocast, compile=compile, runtime=runtime)
    try:
        per_pass = len(jobs) * (len(plan) if single else 1)
        batch = batch_size or auto_batch_size(device, bytes_per_window(network, window), per_pass)
        runner = BatchRunner(network, batch)
        maps = RestorationMaps(
            slices.shape[:2], layout, len(plan), keep_restorations, not single, keep_step_maps, single
        )
        method = _mean_single_step if single else _multi_step
        for progress in method(jobs, padded, plan, runner, maps, settings):
            yield _like(progress, given)
        for index in maps.unfinished_steps():
            n = len(jobs)
            done = Progress(index + 1, len(plan), n, n, runner.batch_size, maps.finish_step(index))
            yield _like(done, given)
    finally:
        network.release()
    channel_maps = maps.step_maps[-1] if maps.step_maps else layout.blend(maps.anomaly)
    return Restoration(
        anomaly_map=combine_channels(channel_maps),
        final=given.copy() if maps.final is None else _as_given(layout.blend(maps.final), given),
        restorations=[_as_given(r, given) for r in maps.restorations],
        step_maps=[combine_channels(m) for m in maps.step_maps],
        timesteps=[s.t for s in plan],
        windows_run=len(jobs) * len(plan),
        windows_skipped=skipped,
        windows_partial=partial,
        batch_size=runner.batch_size,
        seconds=time.perf_counter() - started,
        channel_maps=channel_maps if given.ndim == 4 else None,
        runtime=network.runtime,
    )


def _runnable(jobs: _Jobs, skippable: bool) -> tuple[_Jobs, int]:
    """The jobs to run and how many all-zero windows were skipped: they are skipped only where that
    provably leaves the map unchanged (``skippable``: their score is multiplied by zero)."""
    if not skippable:
        return jobs, 0
    return jobs.select(jobs.nonzero), int((~jobs.nonzero).sum())


def combine_channels(maps: np.ndarray) -> np.ndarray:
    """The one voxel map of per-channel maps (N, C, H, W): their mean over the channels, (N, H, W).

    One channel gives its own map unchanged (the mean of one value is that value)."""
    return maps.mean(axis=1, dtype=np.float32)


def _as_given(stack: np.ndarray, given: np.ndarray) -> np.ndarray:
    """A (N, C, H, W) stack in the shape the caller gave: (N, H, W) for a one-channel (N, H, W) input."""
    return stack[:, 0] if given.ndim == 3 else stack


def _like(progress: Progress, given: np.ndarray) -> Progress:
    if progress.restoration is not None:
        progress.restoration = _as_given(progress.restoration, given)
    return progress


def _with_channel_axis(slices: np.ndarray, channels: int) -> np.ndarray:
    """(N, C, H, W) from a stack of the network's channel count; (N, H, W) only for one channel."""
    if slices.ndim == 3 and channels == 1:
        return slices[:, None]
    if slices.ndim != 4 or slices.shape[1] != channels:
        expected = "(N, H, W) or (N, 1, H, W)" if channels == 1 else f"(N, {channels}, H, W)"
        raise ValueError(f"expected a stack of slices {expected} for this network, got shape {slices.shape}")
    return slices


def _mean_single_step(
    jobs: _Jobs,
    padded: np.ndarray,
    plan: list[InferenceStep],
    runner: BatchRunner,
    maps: RestorationMaps,
    settings: RestorationSettings,
) -> Iterator[Progress]:
    """Every step restores the ORIGINAL window, so the (step, window) pairs are independent: they are
    batched together in step-major order (a batch may hold the end of one step and the start of the
    next), and each pair's score goes straight into the map, weighted as the final score would be."""
    n, n_steps = len(jobs), len(plan)
    timesteps = np.array([s.t for s in plan], dtype=np.int64)
    finished = 0
    for items, x, x0 in runner.run(n * n_steps, lambda i: (jobs.inputs(padded, i % n), timesteps[i // n])):
        job, step_of = items % n, items // n
        weight = np.full(len(items), 1.0 / settings.steps, dtype=np.float32)
        if settings.weight_foreground:
            weight *= (x > 0).mean(axis=(1, 2, 3), dtype=np.float32)
        # the final x of mean-single-step is the input: zero input pixels score zero
        score = np.abs(x - x0) * (x > 0) * weight[:, None, None, None]
        jobs.accumulate(maps.anomaly, score, maps.layout, job)
        for index in np.unique(step_of):
            in_step = step_of == index
            maps.add_restoration(int(index), jobs, np.clip(x0[in_step], 0, 1), job[in_step])
            maps.add_step_score(int(index), jobs, score[in_step], job[in_step])
        last = int(items[-1])
        yield Progress(
            last // n + 1, n_steps, last % n + 1, n, runner.batch_size, None, last + 1, n * n_steps
        )
        while finished < n_steps and last + 1 >= (finished + 1) * n:
            yield Progress(finished + 1, n_steps, n, n, runner.batch_size, maps.finish_step(finished))
            finished += 1


def _multi_step(
    jobs: _Jobs,
    padded: np.ndarray,
    plan: list[InferenceStep],
    runner: BatchRunner,
    maps: RestorationMaps,
    settings: RestorationSettings,
) -> Iterator[Progress]:
    """The restoration carries on from step to step, so windows run the whole chain chunk by chunk
    (:data:`WINDOWS_PER_CHUNK` windows of state at a time), step after step within a chunk."""
    n, n_steps = len(jobs), len(plan)
    for start in range(0, n, WINDOWS_PER_CHUNK):
        chunk = np.arange(start, min(start + WINDOWS_PER_CHUNK, n))
        state = jobs.inputs(padded, chunk)
        foreground = (state > 0).mean(axis=(1, 2, 3), dtype=np.float32) if settings.weight_foreground else None
        score = np.zeros_like(state)
        for index, step in enumerate(plan):
            times = np.full(len(chunk), step.t, dtype=np.int64)
            for items, x, x0 in runner.run(
                len(chunk), lambda i, state=state, times=times: (state[i], times[i])
            ):
                score[items] += np.abs(x - x0)
                state[items] = cold_diffusion_update(x, x0, step)
                maps.add_restoration(index, jobs, np.clip(x0, 0, 1), chunk[items])
                done = start * n_steps + index * len(chunk) + int(items[-1]) + 1
                window = int(chunk[items[-1]]) + 1
                yield Progress(index + 1, n_steps, window, n, runner.batch_size, None, done, n * n_steps)
            if maps.keep_step_maps:  # the final score's formula, with the scores and x so far
                so_far = score / np.float32(settings.steps)
                if foreground is not None:
                    so_far *= foreground[:, None, None, None]
                maps.add_step_score(index, jobs, so_far * (state > 0), chunk)
            if chunk[-1] == n - 1:
                yield Progress(index + 1, n_steps, n, n, runner.batch_size, maps.finish_step(index))
        score /= settings.steps
        if foreground is not None:
            score *= foreground[:, None, None, None]
        score *= state > 0
        jobs.accumulate(maps.anomaly, score, maps.layout, chunk)
        jobs.accumulate(maps.final, state, maps.layout, chunk)


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
    full: np.ndarray  # (K,) bool, every pixel of the window input is non-zero
    window: tuple[int, int]

    def __len__(self) -> int:
        return len(self.slice_index)

    def select(self, keep: np.ndarray) -> _Jobs:
        return _Jobs(
            self.slice_index[keep],
            self.origin_y[keep],
            self.origin_x[keep],
            self.nonzero[keep],
            self.full[keep],
            self.window,
        )

    def inputs(self, padded: np.ndarray, index: np.ndarray) -> np.ndarray:
        """The input windows (k, C, h, w) of the jobs ``index`` in the padded stack (N, C, Hp, Wp)."""
        h, w = self.window
        out = np.empty((len(index), padded.shape[1], h, w), dtype=np.float32)
        for j, i in enumerate(index):
            y, x = self.origin_y[i], self.origin_x[i]
            out[j] = padded[self.slice_index[i], :, y : y + h, x : x + w]
        return out

    def accumulate(
        self, target: np.ndarray, values: np.ndarray, layout: WindowLayout, index: np.ndarray
    ) -> None:
        """Add importance-weighted windows ``values`` (k, C, h, w) of the jobs ``index`` into the padded
        stack ``target`` (N, C, Hp, Wp)."""
        h, w = self.window
        for j, i in enumerate(index):
            y, x = self.origin_y[i], self.origin_x[i]
            target[self.slice_index[i], :, y : y + h, x : x + w] += values[j] * layout.importance


def _window_jobs(padded: np.ndarray, layout: WindowLayout) -> _Jobs:
    n = padded.shape[0]
    origins = np.array(layout.origins, dtype=np.int64)
    slice_index = np.repeat(np.arange(n), len(origins))
    oy = np.tile(origins[:, 0], n)
    ox = np.tile(origins[:, 1], n)
    h, w = layout.window
    # How many pixels of each window are non-zero (in any channel): a summed-area table answers this
    # for all at once.
    occupied = np.pad((padded != 0).any(axis=1).cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    counts = (
        occupied[slice_index, oy + h, ox + w]
        - occupied[slice_index, oy, ox + w]
        - occupied[slice_index, oy + h, ox]
        + occupied[slice_index, oy, ox]
    )
    return _Jobs(slice_index, oy, ox, counts > 0, counts == h * w, layout.window)


def _window_of(unet: UNet2DModel) -> tuple[int, int]:

    return sample_size_pair(unet.config.sample_size)
