"""Exporting a network to ONNX once per set of weights, into the user's cache folder.

ONNX Runtime runs the networks of both methods on the CPU about twice as fast as torch (see
docs/onnx-runtime.md), but it needs the network as an ONNX file. Exporting costs time (the
official-size DISYRE UNet: 47 s on a loaded 2-core CPU, a 101 MiB file), so each export is kept
under ``user_cache_dir("onnx")`` and reused. Its name is a content key: the network's weights (hashed as the checkpoint fingerprint hashes
them, so changed weights never reuse a stale file), what it computes (``role``, e.g. "disyre-unet"),
the input and output names, the shapes of one example but its batch size (the batch axis is dynamic:
one file serves every batch), the opset, the torch version that traced it and :data:`GRAPH_VERSION`.
Files are written atomically: a crashed or concurrent export never leaves a half-written network to
be loaded.

GroupNorm is exported as blocked means (see :func:`_blocked_group_norm`), not as the exporter's
InstanceNormalization: ONNX Runtime sums the 16 384 values of a group in float32 less accurately than
torch does, and on the official-size UNet that one operator put the output 2.4e-4 from a float64
reference where torch is 1.7e-5 from it (docs/onnx-runtime.md, benchmarks/bench_onnx_exactness.py).

The exporter is torch's TorchScript one (``dynamo=False``): it needs only the ``onnx`` package and
exported a tiny UNet in 2 s where the torch.export-based one (which also needs ``onnxscript``) took
16 s; both gave the same outputs to 2e-6.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..checkpoint_files import content_fingerprint
from ..outputs import atomic_output, user_cache_dir

if TYPE_CHECKING:
    import torch

#: ONNX opset 18: the newest the TorchScript exporter of torch 2.13 writes, and read by ONNX Runtime
#: 1.16 and later.
OPSET = 18
#: What the exported graph computes beyond the weights; part of the cache key, so a file exported by
#: an older napari-disyre (GroupNorm as InstanceNormalization) is never reused. 2: blocked GroupNorm.
GRAPH_VERSION = 2


def cached_onnx_path(
    network: torch.nn.Module,
    role: str,
    examples: Sequence[np.ndarray],
    input_names: Sequence[str],
) -> Path:
    """Where the ONNX file of ``network`` computing ``role`` on inputs like ``examples`` is kept."""
    import torch

    shapes = [(str(a.dtype), list(a.shape[1:])) for a in examples]
    settings = [role, list(input_names), shapes, OPSET, torch.__version__, GRAPH_VERSION]
    return user_cache_dir("onnx") / f"{role}-{content_fingerprint(settings, {'': network})}.onnx"


def export_onnx(
    network: torch.nn.Module,
    call: Callable[..., torch.Tensor],
    role: str,
    examples: Sequence[np.ndarray],
    input_names: Sequence[str],
) -> tuple[Path, bool]:
    """The cached ONNX file of ``call`` (a function of the inputs that runs ``network``), exported now
    if there is none; returns the path and whether it was exported by this call.

    ``examples`` are numpy inputs of the right dtypes and per-item shapes; axis 0 (the batch) is
    exported as dynamic. The network is traced on the CPU in float32 and left as it was found.
    """
    path = cached_onnx_path(network, role, examples, input_names)
    if path.exists():
        return path, False
    with atomic_output(path, overwrite=True) as tmp:  # a concurrent export wrote the same bytes
        _trace(network, call, examples, input_names, tmp)
    return path, True


def _trace(
    network: torch.nn.Module,
    call: Callable[..., torch.Tensor],
    examples: Sequence[np.ndarray],
    input_names: Sequence[str],
    target: Path,
) -> None:
    import torch

    class Traced(torch.nn.Module):
        """``call`` as a module, so the exporter sees ``network``'s weights as its parameters."""

        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return call(*inputs)

    device = next(network.parameters()).device
    was_training = network.training
    network.to("cpu").eval()
    axes = {name: {0: "batch"} for name in [*input_names, "output"]}
    try:
        with (
            torch.inference_mode(False),
            torch.no_grad(),
            warnings.catch_warnings(),
            _blocked_group_norms(network),
        ):
            # the tracer warns about every Python branch on a shape; the batch-size branches of
            # diffusers (>= 64 windows: make a tensor contiguous) change no value
            warnings.simplefilter("ignore")
            inputs = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in examples)
            torch.onnx.export(
                Traced(),
                inputs,
                str(target),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(input_names),
                output_names=["output"],
                dynamic_axes=axes,
            )
    finally:
        network.to(device).train(was_training)


def _blocked_group_norm(norm: torch.nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` with each group's mean and variance taken as a mean of row means, for the export.

    A group of (N, C, H, W) is viewed as rows of W values: ONNX Runtime then averages W values, then
    C/G x H row means, instead of summing all C/G x H x W values at once. Measured on the official
    UNet's first GroupNorm (groups of 128 x 128 values): 6e-6 of its largest output from float64 as
    InstanceNormalization, 1.7e-7 blocked, torch 1e-7. Two passes (the variance of the centred
    values), so a mean large against the spread does not cancel either.
    """
    import torch

    last = x.shape[-1] if x.dim() > 2 else 1
    rows = x.reshape(x.shape[0], norm.num_groups, -1, last)
    centred = rows - rows.mean(-1, keepdim=True).mean(-2, keepdim=True)
    variance = (centred * centred).mean(-1, keepdim=True).mean(-2, keepdim=True)
    y = (centred / torch.sqrt(variance + norm.eps)).reshape(x.shape)
    if not norm.affine:
        return y
    per_channel = (1, -1) + (1,) * (x.dim() - 2)
    return y * norm.weight.reshape(per_channel) + norm.bias.reshape(per_channel)


@contextlib.contextmanager
def _blocked_group_norms(network: torch.nn.Module) -> Iterator[None]:
    """Every GroupNorm of ``network`` computed by :func:`_blocked_group_norm` while it is traced; the
    modules are given back unchanged (only their instances are touched, never the class)."""
    import torch

    norms = [m for m in network.modules() if isinstance(m, torch.nn.GroupNorm)]
    for norm in norms:
        norm.forward = functools.partial(_blocked_group_norm, norm)
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward
