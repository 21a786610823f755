"""How far ONNX Runtime's DISYRE outputs and maps are from torch's, and both from a float64 reference:
where the float32 floor is, and what ONNX Runtime adds to it.

Network: the official-size UNet (26.3 M parameters; ``--network tiny`` for a dry run) with seeded
random weights, as ``bench_engine.py``; input: its synthetic slice (a textured ellipse, 240 x 240,
zero background). Each evaluator runs the engine's real code path (``restore``, one thread):

- ``float64``: torch on a float64 copy of the network, its output rounded to float32 (the reference);
- ``torch, batch 4``: the engine's default on a CPU, the maps every other row is compared with;
- ``torch, batch 1``: torch's own float32 floor (another summation order, same arithmetic);
- ``onnxruntime``: this package's export (GroupNorm as blocked means, ``runtime.onnx_export``);
- ``onnxruntime, InstanceNormalization``: the exporter's own GroupNorm (the export before
  ``GRAPH_VERSION`` 2), to show what that one operator costs.

Per evaluator: one call on four windows of the slice at the S = 4 timesteps (largest difference
over the largest |output|), and the maps of exact mode (S = 4, mean-single-step) and fast mode
(largest difference over the map's maximum). Exports go to a temporary cache folder. Prints a
Markdown table (10 minutes on one core of the 2-core CPU shared with other jobs; float64 is most of it):

    OMP_NUM_THREADS=1 python benchmarks/bench_onnx_exactness.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

EVALUATORS = (
    "float64",
    "torch, batch 4",
    "torch, batch 1",
    "onnxruntime",
    "onnxruntime, InstanceNormalization",
)


def float64_network(unet):
    """``unet`` in float64 behind the float32 interface the engine calls (inputs and output float32)."""
    import torch
    from diffusers.models.unets.unet_2d import UNet2DOutput

    class Float64(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = unet.double()
            self.config = unet.config

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> UNet2DOutput:
            return UNet2DOutput(sample=self.inner(x.double(), t).sample.float())

    return Float64()


@contextlib.contextmanager
def exporter_group_norm() -> Iterator[None]:
    """Exports as before GRAPH_VERSION 2: GroupNorm left to the exporter (InstanceNormalization)."""
    from napari_disyre.runtime import onnx_export

    with (
        mock.patch.object(onnx_export, "_blocked_group_norms", lambda network: contextlib.nullcontext()),
        mock.patch.object(onnx_export, "GRAPH_VERSION", 1),
    ):
        yield


def make_network(network: str):
    import torch
    from bench_engine import TINY_NETWORK
    from diffusers import UNet2DModel

    from napari_disyre.training.presets import OFFICIAL_UNET

    torch.manual_seed(0)
    return UNet2DModel(**(OFFICIAL_UNET if network == "official" else TINY_NETWORK)).eval()


def evaluate(name: str, network: str, volume: np.ndarray, windows: np.ndarray, t: np.ndarray) -> dict:
    """One call on ``windows`` at ``t`` and the exact and fast maps of ``volume`` by evaluator ``name``."""
    from napari_disyre.disyre.acceleration import Network
    from napari_disyre.disyre.engine import FAST_STEPS, RestorationSettings, restore
    from napari_disyre.disyre.schedule import Schedule
    from napari_disyre.restoration import run_to_end

    unet = make_network(network)
    if name == "float64":
        unet = float64_network(unet)
    runtime = "onnxruntime" if name.startswith("onnxruntime") else "torch"
    batch = 1 if name.endswith("batch 1") else 4
    patch = exporter_group_norm() if name.endswith("InstanceNormalization") else contextlib.nullcontext()
    with patch:
        call = Network(unet, _cpu(), None, runtime=runtime)
        output = np.concatenate(
            [call(windows[i : i + batch], t[i : i + batch]) for i in range(0, len(t), batch)]
        )

        def restored(settings) -> np.ndarray:
            run = restore(
                volume, unet, Schedule(), settings, batch_size=batch, keep_restorations=False, runtime=runtime
            )
            return run_to_end(run).anomaly_map

        exact = restored(RestorationSettings(steps=4))
        fast = restored(RestorationSettings(steps=FAST_STEPS, fast=True))
    return {"output": output, "exact": exact, "fast": fast}


def _cpu():
    import torch

    return torch.device("cpu")


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference over the largest |value| of ``b``."""
    return float(np.abs(a - b).max() / np.abs(b).max())


def table(results: dict[str, dict]) -> str:
    reference, torch4 = results["float64"], results["torch, batch 4"]
    lines = [
        "| evaluator | one call vs float64 | exact map vs float64 | exact map vs torch batch 4 "
        "| fast map vs float64 | fast map vs torch batch 4 |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        cells = [relative(r["output"], reference["output"])]
        for mode in ("exact", "fast"):
            cells += [relative(r[mode], reference[mode]), relative(r[mode], torch4[mode])]
        lines.append(f"| {name} | " + " | ".join(f"{c:.1e}" for c in cells) + " |")
    top = {mode: float(np.abs(reference[mode]).max()) for mode in ("exact", "fast")}
    lines.append(
        f"\nlargest |output| {np.abs(reference['output']).max():.2f}; map maxima {top['exact']:.4f} (exact, S = 4), "
        f"{top['fast']:.4f} (fast)"
    )
    return "\n".join(lines)


def windows_of(volume: np.ndarray, steps: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Four 128 x 128 windows of the slice (corner, centre, two sides) and the S-step timesteps."""
    from napari_disyre.disyre.schedule import Schedule

    corners = [(0, 0), (56, 56), (112, 28), (56, 112)]
    windows = np.stack([volume[0, i : i + 128, j : j + 128] for i, j in corners])[:, None]
    t = np.array([s.t for s in Schedule().plan(steps)], dtype=np.int64)
    return np.ascontiguousarray(windows), t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--network", choices=("official", "tiny"), default="official")
    parser.add_argument("--size", type=int, default=240, help="in-plane size of the slice")
    args = parser.parse_args(argv)
    import torch
    from bench_engine import synthetic_volume

    torch.set_num_threads(1)
    os.environ["NAPARI_DISYRE_CACHE"] = tempfile.mkdtemp(prefix="bench-onnx-exactness-")
    volume = synthetic_volume((1, args.size, args.size))
    windows, t = windows_of(volume)
    results = {}
    for name in EVALUATORS:
        print(f"running {name}", flush=True)
        results[name] = evaluate(name, args.network, volume, windows, t)
    print(table(results))
    print(f"\n{args.network} UNet, seeded random weights, one {args.size} x {args.size} slice, 1 thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
