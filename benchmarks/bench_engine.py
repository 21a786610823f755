"""Speed and memory of the restoration engine: batched windows vs one window at a time.

The network is the official DISYRE UNet (26.3 M parameters, 128 x 128 windows) with seeded random
weights: speed does not depend on what the weights learned. The input is a synthetic brain-like
volume (an ellipsoid with smooth texture) of 240 x 240 in-plane voxels, as BraTS scans are, so the
sliding windows cover each slice in 3 x 3 windows of 128 with overlap 0.25.

- CPU: a slab of 16 slices (144 windows per step);
- CUDA (when this PyTorch sees a GPU): the whole 240 x 240 x 155 volume.

"one window at a time" is the official implementation's loop (one window per network call); the
batched engine pools the windows of all slices and sends them in batches sized from free memory.
Each configuration runs in its own process so that peak memory (resident set size on the CPU,
``torch.cuda.max_memory_allocated`` on CUDA) is its own. Figures are for ONE restoration step; S
steps cost S times as much. Prints a Markdown table. Run from the repository root:

    python benchmarks/bench_engine.py            # CPU, plus CUDA when available
    python benchmarks/bench_engine.py --slices 4 # a quicker CPU run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def synthetic_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """(N, H, W) slices in [0, 1]: a textured ellipse per slice with a zero background."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    n, h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    inside = (yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1
    texture = gaussian_filter(rng.random(shape, dtype=np.float32), (0, 2, 2))
    return np.where(inside[None], 0.3 + texture, 0).astype(np.float32)


def measure(device_name: str, slices: int, batch_size: int | None) -> dict:
    """Restore once and report windows per second, the batch size used and peak memory."""
    import torch
    from diffusers import UNet2DModel

    from napari_disyre.devices import autocast_dtype
    from napari_disyre.engine import RestorationSettings, restore, run_to_end
    from napari_disyre.schedule import Schedule
    from napari_disyre.training.presets import OFFICIAL_UNET

    torch.manual_seed(0)
    device = torch.device(device_name)
    unet = UNet2DModel(**OFFICIAL_UNET)
    volume = synthetic_volume((slices, 240, 240))
    settings = RestorationSettings(steps=1)
    dtype = autocast_dtype(device, "auto")
    # warm-up on one slice (kernel selection, lazy initialisation), not timed
    run_to_end(
        restore(volume[:1], unet, Schedule(), settings, device=device, autocast=dtype, batch_size=batch_size)
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = run_to_end(
        restore(volume, unet, Schedule(), settings, device=device, autocast=dtype, batch_size=batch_size)
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {
        "windows": result.windows_run,
        "seconds": seconds,
        "windows_per_s": result.windows_run / seconds,
        "batch_size": result.batch_size,
        "peak_mib": peak_mib,
        "precision": str(dtype).replace("torch.", "") if dtype else "float32",
        "threads": torch.get_num_threads(),
    }


def run_isolated(device: str, slices: int, batch_size: int | None) -> dict:
    command = [sys.executable, __file__, "--child", device, str(slices), str(batch_size or 0)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=16, help="slices of the CPU slab")
    parser.add_argument("--gpu-slices", type=int, default=155, help="slices of the CUDA volume")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        device, slices, batch = args.child
        print(json.dumps(measure(device, int(slices), int(batch) or None)))
        return 0

    import torch

    targets = [("cpu", args.slices)]
    if torch.cuda.is_available():
        targets.append(("cuda", args.gpu_slices))
    else:
        print("(no CUDA GPU visible to this PyTorch: CPU rows only)\n")
    rows = []
    for device, slices in targets:
        one = run_isolated(device, slices, 1)
        batched = run_isolated(device, slices, None)
        name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {one['threads']} threads"
        for label, r in (("one window at a time", one), ("batched engine", batched)):
            rows.append(
                f"| {name} | 240 x 240 x {slices} | {label} | {r['batch_size']} | {r['precision']} "
                f"| {r['windows_per_s']:.2f} | {r['windows_per_s'] / one['windows_per_s']:.2f}x "
                f"| {r['peak_mib']:.0f} |"
            )
    print("| device | input | engine | batch | precision | windows/s | speed-up | peak memory (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nOne restoration step of the official UNet (random weights); windows of 128 x 128, overlap 0.25.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
