"""Running the network fast on a device without changing what it computes.

The restoration engine hands batches of windows (k, C, h, w) and their timesteps to :class:`Network`,
which returns ``unet(x, t)`` as float32 numpy. What it does to be fast, and why:

- **channels_last** memory format on CUDA: convolutions run in the NHWC layout that cuDNN's tensor
  core kernels want. Not on the CPU by default: there (idle 2-core AMD EPYC, official-size UNet,
  batches of 4, three alternating runs in one process) it is about 10 % faster per window (128-131
  against 141-144 ms), but its kernels move a tiny random network's scores by up to 3e-5, while the
  default layout keeps the engine within 1e-5 of the per-window reference and of the official-style
  float32 pipeline, and that equality is what "exact" promises. ``Network(channels_last=True)``
  takes the 10 %. The network is converted back when the engine is done, so a caller that keeps
  the model (training saves it) sees it unchanged.
- **torch.compile** (opt-in): compiled once per process with a fixed batch shape, the last batch
  padded to it, so the graph is never recompiled; when torch.compile is unavailable or fails (no C++
  compiler, an unsupported GPU) the eager network is used and a warning says why.
- **pinned host memory and asynchronous copies** (CUDA): each batch is staged in one reused
  page-locked buffer and copied with ``non_blocking=True``.

- **ONNX Runtime** (``runtime="onnxruntime"``, float32 on the CPU): the UNet is exported to ONNX once
  per set of weights and run by ONNX Runtime, about twice as fast as torch with outputs equal to
  a few 1e-6 relative (``runtime.sessions``; docs/onnx-runtime.md). A failed export warns and runs
  torch.

Everything device-specific is guarded by the device type, so the CPU runs the same code paths
(except the CUDA copies) and the compile fallback is testable anywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DisyreError
from ..runtime.devices import inference_context, is_out_of_memory, release_cached_memory
from ..runtime.sessions import onnx_network
from .windows import sample_size_pair

if TYPE_CHECKING:
    import torch
    from diffusers import UNet2DModel


class Network:
    """``unet(x, t)`` on batches of windows, in the fastest layout the device offers."""

    def __init__(
        self,
        unet: UNet2DModel,
        device: torch.device,
        autocast: torch.dtype | None,
        *,
        channels_last: bool | None = None,
        compile: bool = False,
        runtime: str = "torch",
    ):
        """``runtime`` is ``torch`` or ``onnxruntime`` (as ``runtime.sessions.choose_runtime`` resolves it)."""
        import torch

        self.unet = unet.to(device).eval()
        self.device = device
        self.autocast = autocast
        self.channels_last = device.type == "cuda" if channels_last is None else channels_last
        if self.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self.forward = self.unet
        self.compiled = False
        self.compile_error: str | None = None
        self.static_batch: int | None = None
        self._staging: torch.Tensor | None = None
        self.onnx = _onnx_unet(self.unet) if runtime == "onnxruntime" else None
        self.runtime = "torch" if self.onnx is None else "onnxruntime"
        if compile:
            self._try_compile()

    def _try_compile(self) -> None:
        import torch

        try:
            self.forward = torch.compile(self.unet, dynamic=False)
            self.compiled = True
        except Exception as exc:  # torch.compile missing or refusing this platform
            self._fall_back(exc)

    def _fall_back(self, exc: BaseException) -> None:
        self.compile_error = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"torch.compile failed ({self.compile_error}); running the network uncompiled", stacklevel=3
        )
        self.forward = self.unet
        self.compiled = False

    def __call__(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``unet(x, t)`` for windows ``x`` (k, C, h, w) and timesteps ``t`` (k,), as float32 (k, C, h, w);
        windows (k, h, w) of a one-channel network give (k, h, w)."""
        k = len(x)
        if self.onnx is not None:
            x = np.asarray(x, np.float32)
            out = self.onnx(x[:, None] if x.ndim == 3 else x, np.asarray(t, np.int64))
            return out[:, 0] if x.ndim == 3 else out
        if self.compiled:
            # one static shape: pad the batch to the first (largest) size seen, never recompile
            self.static_batch = max(self.static_batch or 0, k)
            x, t = _pad_batch(x, t, self.static_batch)
            try:
                return self._run(x, t)[:k]
            except Exception as exc:
                if is_out_of_memory(exc):
                    self.static_batch = None  # the engine retries with a smaller batch: recompile once
                    raise
                self._fall_back(exc)
                x, t = x[:k], t[:k]
        return self._run(x, t)

    def _run(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        import torch

        with inference_context(self.device, self.autocast):
            batch = self._to_device(x)
            timesteps = torch.from_numpy(np.ascontiguousarray(t, dtype=np.int64)).to(self.device)
            out = self.forward(batch, timesteps).sample
        out = out.float().cpu().numpy()
        return out[:, 0] if x.ndim == 3 else out

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        import torch

        host = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if host.ndim == 3:  # one channel: (k, h, w) -> (k, 1, h, w)
            host = host[:, None]
        if self.device.type == "cuda":
            if (
                self._staging is None
                or self._staging.shape[0] < len(x)
                or self._staging.shape[2:] != host.shape[2:]
            ):
                self._staging = torch.empty(host.shape, dtype=torch.float32).pin_memory()
            staged = self._staging[: len(x)]
            staged.copy_(host)
            # The previous batch's result was copied back synchronously, so the buffer is free.
            batch = staged.to(self.device, non_blocking=True)
        else:
            batch = host.to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def release(self) -> None:
        """Give the network back in the default memory format (the caller may save or train it)."""
        import torch

        if self.channels_last:
            self.unet.to(memory_format=torch.contiguous_format)
        self._staging = None


def _onnx_unet(unet: UNet2DModel):
    """The UNet's ``unet(x, t).sample`` on ONNX Runtime, or None (torch runs it) if that fails."""
    window = sample_size_pair(unet.config.sample_size)
    examples = [np.zeros((1, unet.config.in_channels, *window), np.float32), np.zeros(1, np.int64)]
    return onnx_network(unet, lambda x, t: unet(x, t).sample, "disyre-unet", examples, ["x", "t"])


def _pad_batch(x: np.ndarray, t: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    if len(x) == size:
        return x, t
    pad = size - len(x)
    return (
        np.concatenate([x, np.zeros((pad, *x.shape[1:]), dtype=x.dtype)]),
        np.concatenate([t, np.full(pad, t[-1], dtype=t.dtype)]),
    )


class BatchRunner:
    """Runs the network on consecutive batches of work items; halves the batch on out-of-memory."""

    def __init__(self, network: Network, batch_size: int):
        self.network = network
        self.batch_size = max(1, batch_size)

    def run(
        self, total: int, make_batch: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(items, x, unet(x, t))`` for consecutive batches of the items ``0 .. total - 1``;
        ``make_batch(items)`` gives their windows ``x`` and timesteps ``t``."""
        start = 0
        while start < total:
            items = np.arange(start, min(start + self.batch_size, total))
            x, t = make_batch(items)
            try:
                x0 = self.network(x, t)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                release_cached_memory(self.network.device)
                if self.batch_size == 1:
                    raise DisyreError(
                        f"out of memory on {self.network.device} even with one window per batch. Free memory "
                        "(close other programs or viewers), or use --device cpu."
                    ) from exc
                self.batch_size //= 2
                continue
            yield items, x, x0
            start = int(items[-1]) + 1


def bytes_per_window(network: Network, window: tuple[int, int]) -> int:
    """Peak memory one window costs: measured on CUDA, estimated from the widest layers elsewhere."""
    import torch

    device = network.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        channels = network.unet.config.in_channels
        network(np.zeros((2, channels, *window), dtype=np.float32), np.full(2, 50, dtype=np.int64))
        return max(1, (torch.cuda.max_memory_allocated(device) - before) // 2)
    width = max(network.unet.config.block_out_channels)
    # a few activations of the widest block at full resolution dominate; 4 bytes each
    return int(window[0] * window[1] * width * 4 * 6)
