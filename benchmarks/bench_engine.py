"""Speed and memory of the restoration engine against the official pipeline as it really runs.

Baseline ("official-style", ``benchmarks/official_style.py``): every window of every slice pooled,
chunks of 320 windows, float32, the whole S-step chain per chunk, Gaussian blending by folding. Rows:

- ``exact``: this engine with default settings (maps equal to the baseline: float32 to 1e-5 in the
  tests; on CUDA bf16 autocast, the default there, and channels_last);
- ``exact, float32`` (CUDA only): the same without autocast;
- ``exact, compiled`` (``--compile``): torch.compile with a static batch shape (compile time reported
  separately, not in the speed);
- ``fast``: ``RestorationSettings(fast=True)``, window step half the window, S = 1 (fast mode's default);
- ``exact, onnxruntime`` and ``fast, onnxruntime`` (CPU): the same two on ONNX Runtime
  (``runtime="onnxruntime"``); the one-time export to ONNX is done untimed before (its seconds are
  reported below the table), the session's start (weights hashed, file loaded) is timed. The torch
  rows run ``runtime="torch"``.

``--repeats N`` runs the rows N times, alternated (row 1, row 2, ..., row 1, row 2, ...), and reports
each row's fastest run with the speed-ups from those: on a CPU shared with other jobs, alternation
spreads the load over all rows.

Network: the official DISYRE UNet (26.3 M parameters, 128 x 128 windows; ``--network tiny`` for a dry
run) with seeded random weights: speed does not depend on what the weights learned. Input: a
synthetic brain-like slab (a textured ellipse filling 0.8 x 0.7 of each 240 x 240 slice, as BraTS
slices are sized; 25 windows per slice at the official step). Each row runs in its own process
(peak memory: resident set on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA), after one
untimed network call. Speed-ups are against the official-style row of the same run. Prints a
Markdown table:

    python benchmarks/bench_engine.py --slices 2 --steps 4 --repeats 2  # CPU (2 slices: 50 windows)
    python benchmarks/bench_engine.py --device cuda --slices 155 --compile
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

TINY_NETWORK = {
    "sample_size": [128, 128],
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 1,
    "block_out_channels": (8, 16, 16),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}
ROWS = (
    "official-style",
    "exact",
    "exact, onnxruntime",
    "exact, float32",
    "exact, compiled",
    "fast",
    "fast, onnxruntime",
)


def synthetic_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """(N, H, W) slices in [0, 1]: a textured ellipse per slice with a zero background."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    n, h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    inside = (yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1
    texture = gaussian_filter(rng.random(shape, dtype=np.float32), (0, 2, 2))
    return np.where(inside[None], 0.3 + texture, 0).astype(np.float32)


def measure(
    row: str, device_name: str, shape: tuple[int, int, int], steps: int, network: str, map_out: str | None = None
) -> dict:
    """Restore the slab once as ``row`` does; report time, network evaluations and peak memory (and
    save the anomaly map to ``map_out``, .npy, for the comparison of the rows' maps)."""
    import torch
    from diffusers import UNet2DModel
    from official_style import official_style_restore

    from napari_disyre.disyre.engine import FAST_STEPS, RestorationSettings, restore
    from napari_disyre.disyre.schedule import Schedule
    from napari_disyre.disyre.windows import window_layout
    from napari_disyre.restoration import run_to_end
    from napari_disyre.runtime.devices import autocast_dtype
    from napari_disyre.training.presets import OFFICIAL_UNET

    torch.manual_seed(0)
    device = torch.device(device_name)
    unet = UNet2DModel(**(OFFICIAL_UNET if network == "official" else TINY_NETWORK)).eval().to(device)
    volume = synthetic_volume(shape)
    with torch.inference_mode():  # untimed: lazy initialisation, kernel selection
        unet(torch.zeros(1, 1, 128, 128, device=device), torch.tensor([99], device=device))
    precision = "float32" if row in ("official-style", "exact, float32") else "auto"
    dtype = autocast_dtype(device, precision)
    settings = (
        RestorationSettings(steps=FAST_STEPS, fast=True) if row.startswith("fast") else RestorationSettings(steps)
    )
    runtime = "onnxruntime" if row.endswith("onnxruntime") else "torch"
    compile_seconds = export_seconds = 0.0
    if runtime == "onnxruntime":  # the one-time export (cached per weights: 0 once done), untimed
        from napari_disyre.runtime.onnx_export import export_onnx

        started = time.perf_counter()
        example = [np.zeros((1, 1, 128, 128), np.float32), np.zeros(1, np.int64)]
        _, exported = export_onnx(unet, lambda x, t: unet(x, t).sample, "disyre-unet", example, ["x", "t"])
        export_seconds = (time.perf_counter() - started) if exported else 0.0
    if row == "exact, compiled":  # compile (and warm up) on the same shapes, untimed
        started = time.perf_counter()
        run_to_end(restore(volume, unet, Schedule(), settings, device=device, autocast=dtype, compile=True))
        compile_seconds = time.perf_counter() - started
    _synchronize(device)
    started = time.perf_counter()
    if row == "official-style":
        anomaly_map, _ = official_style_restore(volume, unet, Schedule(), steps)
        per_slice = len(window_layout(shape[1:], (128, 128)).origins)
        evaluations, batch = per_slice * shape[0] * steps, 320
    else:
        result = run_to_end(
            restore(
                volume, unet, Schedule(), settings, device=device, autocast=dtype,
                keep_restorations=False, compile=row == "exact, compiled", runtime=runtime,
            )
        )  # fmt: skip
        evaluations, batch, anomaly_map = result.windows_run, result.batch_size, result.anomaly_map
    _synchronize(device)
    seconds = time.perf_counter() - started
    if map_out:
        np.save(map_out, np.asarray(anomaly_map, np.float32))
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {
        "row": row,
        "seconds": seconds,
        "evaluations": evaluations,  # network evaluations of one window
        "batch_size": batch,
        "steps": settings.steps if row != "official-style" else steps,
        "peak_mib": peak_mib,
        "precision": str(dtype).replace("torch.", "") if dtype else "float32",
        "threads": torch.get_num_threads(),
        "runtime": result.runtime if row != "official-style" else "torch",
        "compile_seconds": compile_seconds,
        "export_seconds": export_seconds,
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads",
    }


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def run_isolated(row: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        row,
        "--device",
        args.device,
        "--slices",
        str(args.slices),
    ]
    command += ["--size", str(args.size), "--steps", str(args.steps), "--network", args.network]
    command += ["--map-out", str(Path(args.maps) / f"{row}.npy")]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:  # one failing row (e.g. compile) must not lose the others
        return {"row": row, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict], args: argparse.Namespace) -> str:
    base = next((r for r in results if r["row"] == "official-style" and "error" not in r), None)
    lines = [
        "| device | input | row | runtime | S | batch | precision | seconds | speed-up vs official-style "
        "| peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    size = f"{args.size} x {args.size} x {args.slices}"
    for r in results:
        if "error" in r:
            lines.append(f"| {args.device} | {size} | {r['row']} | failed: {r['error'][:80]} |||||||")
            continue
        ratio = f"{base['seconds'] / r['seconds']:.2f}x" if base else "n/a"
        lines.append(
            f"| {r['device']} | {size} | {r['row']} | {r['runtime']} | {r['steps']} | {r['batch_size']} | {r['precision']} "
            f"| {r['seconds']:.2f} | {ratio} | {r['peak_mib']:.0f} |"
        )
    compiled = [r for r in results if r.get("compile_seconds")]
    notes = [f"\ncompile + warm-up of the compiled row: {r['compile_seconds']:.1f} s" for r in compiled]
    notes += [f"\nONNX export ({r['row']}): {r['export_seconds']:.1f} s" for r in results if r.get("export_seconds")]
    return "\n".join(lines) + "".join(notes)


def _row_names(text: str) -> list[str]:
    """``--rows`` split at commas, the names that hold a comma ("exact, onnxruntime") kept whole."""
    rows: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if rows and f"{rows[-1]}, {piece}" in ROWS:
            rows[-1] = f"{rows[-1]}, {piece}"
        else:
            rows.append(piece)
    return rows


def _map_differences(rows: list[str], folder: str) -> str:
    """Each row's map against the torch row of its mode (official-style: against exact), as the
    largest difference over the largest value of the torch map."""
    lines = []
    for row in rows:
        reference = "exact" if row == "official-style" else row.replace(", onnxruntime", "")
        ours, theirs = Path(folder) / f"{row}.npy", Path(folder) / f"{reference}.npy"
        if row != reference and ours.exists() and theirs.exists():
            a, b = np.load(ours), np.load(theirs)
            lines.append(f"map of {row} vs {reference}: {np.abs(a - b).max() / np.abs(b).max():.1e} of its maximum")
    return "\n" + "\n".join(lines)


def _fastest(runs: list[dict]) -> dict:
    done = [r for r in runs if "error" not in r]
    return min(done, key=lambda r: r["seconds"]) if done else runs[0]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--slices", type=int, default=2, help="slices of the slab")
    parser.add_argument("--size", type=int, default=240, help="in-plane size of the slices")
    parser.add_argument("--steps", type=int, default=4, help="S of the baseline and exact rows")
    parser.add_argument("--network", choices=("official", "tiny"), default="official")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile row")
    parser.add_argument("--rows", default=None, help="comma-separated subset of the rows")
    parser.add_argument("--repeats", type=int, default=1, help="alternated runs of every row (best kept)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--map-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.slices, args.size, args.size)
    if args.child:
        print(json.dumps(measure(args.child, args.device, shape, args.steps, args.network, args.map_out)))
        return 0
    args.maps = tempfile.mkdtemp(prefix="bench-engine-maps-")
    rows = [
        r
        for r in ROWS
        if (args.compile or r != "exact, compiled")
        and (args.device == "cpu" or "onnxruntime" not in r)
        and (args.device != "cpu" or r != "exact, float32")
    ]
    if args.rows:
        rows = _row_names(args.rows)
    runs = [run_isolated(row, args) for _ in range(args.repeats) for row in rows]
    results = [_fastest([r for r in runs if r["row"] == row]) for row in rows]
    print(table(results, args))
    print(_map_differences(rows, args.maps))
    times = {row: ", ".join(f"{r['seconds']:.1f}" for r in runs if r["row"] == row and "error" not in r) for row in rows}
    print(
        f"\n{args.network} UNet, random weights, 128 x 128 windows; S = {args.steps} "
        "mean-single-step except fast (its own S); each row in its own process, "
        f"{args.repeats} alternated run(s), the fastest shown (all: {'; '.join(f'{k}: {v}' for k, v in times.items())})."
    )
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
