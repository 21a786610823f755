"""Which runtime evaluates the networks (torch or ONNX Runtime), and ONNX Runtime sessions that take
the place of a torch network's call.

On a CPU, ONNX Runtime evaluates the same float32 networks about twice as fast as torch, and degrades
far less on a shared machine (torch's OpenMP threads spin-wait for busy cores); its outputs equal
torch's to a few 1e-6 relative (docs/onnx-runtime.md). torch stays the runtime on GPUs, under
reduced precision, with ``torch.compile`` and for training. ``auto`` picks ONNX Runtime wherever it
can run (float32 on the CPU, the package installed) and torch elsewhere, saying why in the log;
asking for ``onnxruntime`` where it cannot run is an error that says what to change.

A network whose export or session fails falls back to torch with one warning line saying why: a
detection never fails because of the faster runtime.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import DisyreError
from .onnx_export import export_onnx

if TYPE_CHECKING:
    import torch

RuntimeName = Literal["auto", "torch", "onnxruntime"]
RUNTIME_CHOICES: tuple[str, ...] = ("auto", "torch", "onnxruntime")
INSTALL_COMMAND = "pip install onnxruntime onnx"
#: What the progress says while a network is exported (first use of a checkpoint) or loaded.
LOADING_STAGE = "ONNX Runtime: loading the network (exported once per checkpoint, on first use)"

log = logging.getLogger(__name__)


class OnnxRuntimeFallback(RuntimeWarning):
    """A network could not be exported or loaded for ONNX Runtime and runs on torch instead."""


def import_onnxruntime():
    """The ``onnxruntime`` module, or a :class:`DisyreError` naming the command that installs it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise DisyreError(
            f"--runtime onnxruntime needs the onnxruntime and onnx packages, which are not installed "
            f"({exc}). Install them with `{INSTALL_COMMAND}`, or use --runtime torch."
        ) from None
    return onnxruntime


def choose_runtime(
    requested: str | None, device: torch.device, autocast: torch.dtype | None, compile: bool = False
) -> str:
    """``"torch"`` or ``"onnxruntime"`` for a run on ``device`` under ``autocast`` (None: float32)."""
    requested = (requested or "auto").lower()
    if requested not in RUNTIME_CHOICES:
        raise DisyreError(f"unknown runtime {requested!r}; choose one of {', '.join(RUNTIME_CHOICES)}")
    if requested == "torch":
        return "torch"
    blocker = None
    if device.type != "cpu":
        blocker = f"the networks run on {device}"
    elif autocast is not None:
        blocker = f"{str(autocast).removeprefix('torch.')} precision was asked"
    elif compile:
        blocker = "torch.compile was asked"
    if requested == "onnxruntime":
        if blocker:
            raise DisyreError(
                f"--runtime onnxruntime runs float32 networks on the CPU, but {blocker}. Use --device cpu "
                "and --precision float32 (without --compile) with it, or --runtime torch or auto."
            )
        import_onnxruntime()
        return "onnxruntime"
    if blocker:
        log.info("runtime auto: torch, because %s", blocker)
        return "torch"
    try:
        import_onnxruntime()
    except DisyreError:
        log.info("runtime auto: torch, because onnxruntime is not installed (%s)", INSTALL_COMMAND)
        return "torch"
    return "onnxruntime"


def intra_op_threads(env: Mapping[str, str] = os.environ) -> int:
    """The cores torch would use (``OMP_NUM_THREADS`` or the machine's), shared among the processes
    of a run on this machine (torchrun's ``LOCAL_WORLD_SIZE``; one thread each at least)."""
    import torch

    try:
        local = max(1, int(env.get("LOCAL_WORLD_SIZE", 1)))
    except ValueError:
        local = 1
    return max(1, torch.get_num_threads() // local)


class OnnxNetwork:
    """An ONNX Runtime session called like the network: numpy inputs in, the float32 output back.

    The memory pattern (one block planned for a whole run's activations) is off: on the official
    UNet at batch 4 it held 220 MiB of activations where ONNX Runtime without it peaks at 65 MiB, and
    it was no faster (0.996x the time per call, one thread; docs/onnx-runtime.md). Idle threads spin
    (ONNX Runtime's default): on the quiet 2-core CPU 2 spinning threads took 124 ms a window and 2
    sleeping ones 191 (batch 4, best of 4 alternated calls); beside other jobs sleeping is better (268
    against 352 ms), but there the advice is one thread (``OMP_NUM_THREADS=1``: 242 ms), with which
    spinning has nothing to wait for.
    """

    def __init__(self, path: os.PathLike | str, threads: int):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_mem_pattern = False
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.threads = threads

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(a) for name, a in zip(self.input_names, inputs, strict=True)}
        return self.session.run(None, feeds)[0]


def onnx_network(
    network: torch.nn.Module,
    call: Callable[..., torch.Tensor],
    role: str,
    examples: Sequence[np.ndarray],
    input_names: Sequence[str],
) -> OnnxNetwork | None:
    """``call`` (which runs ``network``) on ONNX Runtime, exported on first use; None, with one
    warning line saying why, when the export or the session fails (the caller then runs torch)."""
    try:
        path, _ = export_onnx(network, call, role, examples, input_names)
        return OnnxNetwork(path, intra_op_threads())
    except Exception as exc:  # any exporter or runtime failure: torch still computes the same maps
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        warnings.warn(
            f"ONNX Runtime cannot run the {role} ({reason}); running it on torch", OnnxRuntimeFallback, stacklevel=2
        )
        return None


def tensor_call(
    network: torch.nn.Module,
    call: Callable[..., torch.Tensor],
    role: str,
    examples: Sequence[np.ndarray],
    input_names: Sequence[str],
) -> Callable[..., torch.Tensor]:
    """``call`` on ONNX Runtime with torch tensors in and out (as the torch code around it expects),
    or ``call`` itself when the export or the session fails (see :func:`onnx_network`)."""
    session = onnx_network(network, call, role, examples, input_names)
    if session is None:
        return call

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(session(*(i.detach().cpu().numpy() for i in inputs)))

    return run
