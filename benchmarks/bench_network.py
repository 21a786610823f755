"""What one window evaluation of the official-size DISYRE UNet costs, by runtime (torch or ONNX
Runtime), batch size, memory layout, compilation and thread count: the numbers behind the engine's
CPU batch, layout and runtime choices.

Each configuration runs in one process, alternated ``--repeats`` times, after one untimed call;
times are milliseconds per 128 x 128 window (random weights and inputs: speed does not depend on
them). Prints a Markdown table:

    python benchmarks/bench_network.py                          # CPU: batches, layouts, threads, runtimes
    python benchmarks/bench_network.py --compile                # adds torch.compile (slow to build)
    python benchmarks/bench_network.py --device cuda --batches 64,128,320
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def per_window_ms(
    batch: int, layout: str, compiled: bool, device: str, calls: int, runtime: str = "torch"
) -> float:
    """Milliseconds per window of ``calls`` timed network calls on a batch of ``batch`` windows."""
    import torch
    from diffusers import UNet2DModel

    from napari_disyre.training.presets import OFFICIAL_UNET

    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    unet = UNet2DModel(**OFFICIAL_UNET).eval().to(device).to(memory_format=fmt)
    x = torch.rand(batch, 1, 128, 128, device=device).contiguous(memory_format=fmt)
    t = torch.full((batch,), 99, device=device)
    if runtime == "onnxruntime":
        return _onnxruntime_ms(unet, x.numpy(), t.numpy(), calls)
    forward = torch.compile(unet, dynamic=False) if compiled else unet
    with torch.inference_mode():
        forward(x, t)  # untimed: kernel selection, compilation
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(calls):
            forward(x, t)
        if device == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - started) / (calls * batch) * 1000


def _onnxruntime_ms(unet, x, t, calls: int) -> float:
    """The same network exported (cached) and run by ONNX Runtime with torch's thread count."""
    from napari_disyre.runtime.onnx_export import export_onnx
    from napari_disyre.runtime.sessions import OnnxNetwork, intra_op_threads

    path, _ = export_onnx(unet, lambda a, b: unet(a, b).sample, "disyre-unet", [x[:1], t[:1]], ["x", "t"])
    session = OnnxNetwork(path, intra_op_threads())
    session(x, t)  # untimed: first-run allocations
    started = time.perf_counter()
    for _ in range(calls):
        session(x, t)
    return (time.perf_counter() - started) / (calls * len(x)) * 1000


def run_child(config: dict, threads: int) -> float:
    """One configuration in its own process (thread count and compilation do not leak)."""
    command = [sys.executable, __file__, "--child", json.dumps(config), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,4,8,16,32,64", help="batch sizes, default layout")
    parser.add_argument("--layout-batch", type=int, default=4, help="batch of the layout/thread/compile rows")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the main rows")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile row")
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs of each row")
    parser.add_argument("--windows", type=int, default=24, help="windows timed per run")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(per_window_ms(**json.loads(args.child)))
        return 0
    rows: list[tuple[str, dict, int]] = []
    for batch in (int(b) for b in args.batches.split(",")):
        rows.append(
            (f"batch {batch}", {"batch": batch, "layout": "default", "compiled": False}, args.threads)
        )
    b = args.layout_batch
    rows.append(
        (
            f"batch {b}, channels_last",
            {"batch": b, "layout": "channels_last", "compiled": False},
            args.threads,
        )
    )
    if args.device == "cpu":
        rows.append((f"batch {b}, 1 thread", {"batch": b, "layout": "default", "compiled": False}, 1))
        for threads in (args.threads, 1):
            config = {"batch": b, "layout": "default", "compiled": False, "runtime": "onnxruntime"}
            rows.append((f"batch {b}{', 1 thread' if threads == 1 else ''}", config, threads))
    if args.compile:
        rows.append(
            (f"batch {b}, compiled", {"batch": b, "layout": "default", "compiled": True}, args.threads)
        )
    times: dict[tuple[str, str], list[float]] = {(n, c.get("runtime", "torch")): [] for n, c, _ in rows}
    for _ in range(args.repeats):
        for name, config, threads in rows:
            calls = max(1, args.windows // config["batch"])
            times[name, config.get("runtime", "torch")].append(
                run_child({**config, "device": args.device, "calls": calls}, threads)
            )
    print(f"| {args.device} | runtime | ms per window (each run) | best |")
    print("|---|---|---|---|")
    for (name, runtime), values in times.items():
        print(f"| {name} | {runtime} | {', '.join(f'{v:.1f}' for v in values)} | {min(values):.1f} |")
    print(
        f"\nofficial-size DISYRE UNet (26.3 M parameters), 128 x 128 windows, {args.threads} threads unless stated"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
