"""Choosing where the network runs (CUDA, Apple mps, CPU), in which precision, and how many windows
fit in one batch.

CUDA runs under autocast (bfloat16 where the GPU supports it, else float16) because restoration is
dominated by convolutions that tensor cores speed up several times; mps and the CPU stay in float32,
the precision of the reference equations.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from ..errors import DisyreError

if TYPE_CHECKING:
    import torch

DeviceName = Literal["auto", "cuda", "mps", "cpu"]
Precision = Literal["auto", "float32", "bfloat16", "float16"]
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")
PRECISION_CHOICES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")

#: Windows per batch on a CPU. Measured with the official UNet on 2 cores (benchmarks/bench_engine.py):
#: 1, 2, 4, 8, 16 windows gave 1.00, 1.10, 1.13, 0.92, 0.87x the one-window throughput while memory
#: grew from 0.6 to 1.2 GiB: bigger CPU batches only cost memory and cache misses.
CPU_BATCH = 4
#: Upper bound on an accelerator; the real size comes from the free memory (see ``auto_batch_size``).
MAX_ACCELERATOR_BATCH = 512


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA, then mps, then the CPU; an explicit choice must be available."""
    import torch

    name = (name or "auto").lower()
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise DisyreError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DisyreError(
            "the CUDA device was requested but this PyTorch sees no CUDA GPU (a CPU-only PyTorch build, or "
            "no driver). Use --device auto or cpu, or install a CUDA build of PyTorch."
        )
    if name == "mps" and not _mps_available():
        raise DisyreError(
            "the mps device was requested but is not available (it needs Apple silicon and macOS)."
        )
    return torch.device(name)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def autocast_dtype(device: torch.device, precision: str | None = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` (None: plain float32)."""
    import torch

    precision = (precision or "auto").lower()
    if precision not in PRECISION_CHOICES:
        raise DisyreError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}")
    if precision == "float32":
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and precision == "float16":
        raise DisyreError("float16 autocast is not supported on the CPU; use float32 or bfloat16")
    return getattr(torch, precision)


def training_autocast_dtype(device: torch.device, precision: str | None = "auto") -> torch.dtype | None:
    """The autocast dtype for training: the inference policy on CUDA, plain float32 elsewhere.

    Off CUDA training stays in float32, whatever ``precision`` says (the CLI documents this), so one
    command line gives the same run on a laptop as before; only CUDA gets tensor-core speed-ups.
    """
    if device.type != "cuda":
        return None
    return autocast_dtype(device, precision)


@contextlib.contextmanager
def inference_context(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.inference_mode`` plus autocast when a reduced precision is chosen."""
    import torch

    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/mps/CPU allocation failures, which a smaller batch may avoid."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_cached_memory(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (None where it cannot be told)."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        with contextlib.suppress(ValueError, OSError, AttributeError):
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return None


def auto_batch_size(device: torch.device, bytes_per_window: int, n_windows: int) -> int:
    """How many windows to send at once: half the free memory divided by a window's peak cost.

    On the CPU, :data:`CPU_BATCH` at most (more only costs memory). On CUDA, up to
    :data:`MAX_ACCELERATOR_BATCH`. Never more than there are windows; at least 1.
    """
    cap = CPU_BATCH if device.type == "cpu" else MAX_ACCELERATOR_BATCH
    free = available_memory_bytes(device)
    if free is not None and bytes_per_window > 0:
        cap = min(cap, max(1, int(0.5 * free // bytes_per_window)))
    return max(1, min(cap, n_windows))
