"""Train the README's models side by side on one lent GPU, within a fixed wall-time budget.

The jobs are the demo T1 model (the 21 healthy brains of ds002748, the last 3 held out for
validation) and the four BraTS models (FLAIR and T1c, folds A and B of
``brats_leave_patients_out.py``, whose train command this reuses). A small model leaves one GPU
mostly idle, so all five run at once, each as its own ``napari-disyre train`` process with its
share of the CPU cores as batch-making workers (``--workers``).

The cosine learning-rate schedule needs the number of steps in advance, so the budget is spent in
two phases: every job first runs a few steps (which also proves that the CUDA path works), its
throughput is read from its training log, and then each job is given the steps that fit the time
left and runs again from scratch. A job that fails in the first phase is retried in float32.
Each finished model (checkpoint and training log, not the resumable state) is packed as
``OUT/NAME.tar.gz``, with ``OUT/summary.json`` (steps, throughput, wall times).

Inputs are the model-grid copies of ``model_grid_copies.py`` (small enough to upload):

    python benchmarks/train_on_gpu.py --healthy .gpudata/healthy --brats .gpudata/brats \\
        --budget 500 --out "$OUT" [--t1c-init src/napari_disyre/data/demo_t1_checkpoint]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from brats_leave_patients_out import CONTRASTS, FOLDS, NAPARI_DISYRE, train_command

PROBE_STEPS = 60
EXPORT_MARGIN_S = 30  # final export, healthy-score quantiles and packing


@dataclass
class Job:
    name: str
    command: Callable[[Path, int], list[str]]  # train arguments for an output folder and steps
    precision: str = "auto"
    probe: dict = field(default_factory=dict)
    steps: int = 0


def jobs(
    healthy: Path, brats: Path, batch_size: int, demo_init: Path | None = None, t1c_init: Path | None = None
) -> list[Job]:
    """The five jobs; ``demo_init`` fine-tunes the demo model from a checkpoint (e.g. the bundled
    one), ``t1c_init`` starts the T1c models from one (the healthy T1 model: see the README)."""

    def demo_t1(out: Path, steps: int) -> list[str]:
        return [
            "train", str(healthy), "--out", str(out), "--steps", str(steps),
            "--pattern", "sub-*/anat/*_T1w.nii.gz", "--val-count", "3", "--preset", "small", "--ema",
            "--batch-size", str(batch_size), "--description", "T1 model trained on the 18 healthy "
            "brains sub-52..sub-69 of OpenNeuro ds002748 (CC0); validation sub-70..sub-72",
        ] + (["--init", str(demo_init)] if demo_init else [])  # fmt: skip

    found = [Job("demo_T1", demo_t1)]
    for contrast in CONTRASTS:
        for fold in FOLDS:
            init = t1c_init if contrast == "T1c" else None
            command = partial(train_command, contrast, fold, brats, batch_size=batch_size, init=init)
            found.append(Job(f"{contrast}_fold{fold}", command))
    return found


def launch(job: Job, out: Path, steps: int, logs: Path, device: str, workers: int) -> subprocess.Popen:
    command = [*NAPARI_DISYRE, *job.command(out, steps), "--precision", job.precision]
    command += ["--save-every", "100000", "--device", device, "--workers", str(workers)]
    log = (logs / f"{out.name}.log").open("w")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def run_all(
    batch: list[tuple[Job, Path, int]], logs: Path, device: str, workers: int
) -> dict[str, tuple[int, float]]:
    """Run the jobs at once; each job's exit code and wall time."""
    started = time.perf_counter()
    processes = {job.name: launch(job, out, steps, logs, device, workers) for job, out, steps in batch}
    results: dict[str, tuple[int, float]] = {}
    while len(results) < len(processes):
        for name, process in processes.items():
            if name not in results and process.poll() is not None:
                results[name] = (process.returncode, time.perf_counter() - started)
        time.sleep(0.5)
    return results


def last_rate(model: Path) -> float:
    """Optimiser steps per second over the last logged window of a run."""
    rows = list(csv.DictReader((model / "training" / "log.csv").read_text().splitlines()))
    config = json.loads((model / "training" / "config.json").read_text())
    return float(rows[-1]["examples_per_s"]) / int(config["batch_size"])


def pack(model: Path, archive: Path) -> None:
    """The checkpoint with fp16 weights (half the size; the loader casts back to float32, as for the
    bundled demo checkpoint) and the training log and config, without the resumable state."""
    import shutil

    import torch

    from napari_disyre import load_checkpoint
    from napari_disyre.disyre.checkpoint import save_checkpoint

    packed = model.with_name(model.name + "_fp16")
    save_checkpoint(packed, load_checkpoint(model), weights_dtype=torch.float16, overwrite=True)
    (packed / "training").mkdir()
    for name in ("log.csv", "config.json"):
        shutil.copy2(model / "training" / name, packed / "training" / name)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(packed, arcname=model.name)


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").replace("\r", "\n").splitlines()[-lines:])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--healthy", type=Path, required=True)
    parser.add_argument("--brats", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/disyre_gpu"))
    parser.add_argument("--budget", type=float, default=500, help="seconds for everything")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda", help="cpu only to try this script out")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="batch-making processes per job (default: the cores shared out)",
    )
    parser.add_argument("--only", nargs="+", default=None, help="job names to run")
    parser.add_argument(
        "--demo-init", type=Path, default=None, help="fine-tune the demo model from this checkpoint"
    )
    parser.add_argument(
        "--t1c-init", type=Path, default=None, help="start the T1c models from this checkpoint"
    )
    args = parser.parse_args()
    deadline = time.perf_counter() + args.budget
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    todo = [
        j
        for j in jobs(args.healthy, args.brats, args.batch_size, args.demo_init, args.t1c_init)
        if not args.only or j.name in args.only
    ]

    workers = args.workers if args.workers is not None else max(0, (os.cpu_count() or 1) // len(todo) - 1)
    probes = run_all(
        [(j, args.work / f"probe_{j.name}", PROBE_STEPS) for j in todo], logs, args.device, workers
    )
    rates = {}
    for job in todo:
        code, wall = probes[job.name]
        if code == 0:
            rates[job.name] = last_rate(args.work / f"probe_{job.name}")
            job.probe = {"steps_per_s": rates[job.name], "wall_s": wall}
        else:
            print(
                f"{job.name}: probe failed (exit {code}); retrying in float32\n{tail(logs / f'probe_{job.name}.log')}"
            )
            job.precision = "float32"
    slowest = min(rates.values(), default=2.0)
    for job in todo:
        rate = rates.get(job.name, slowest)
        overhead = job.probe.get("wall_s", 60.0) - PROBE_STEPS / rate  # loading, start-up, export
        left = deadline - time.perf_counter() - overhead - EXPORT_MARGIN_S
        job.steps = max(100, int(0.9 * rate * left) // 100 * 100)
        print(f"{job.name}: {rate:.2f} steps/s in the probe, {job.precision}: {job.steps} steps", flush=True)

    finals = run_all([(j, args.work / j.name, j.steps) for j in todo], logs, args.device, workers)
    summary = {}
    for job in todo:
        code, wall = finals[job.name]
        model = args.work / job.name
        summary[job.name] = {"exit": code, "steps": job.steps, "precision": job.precision,
                             "workers": workers, "probe": job.probe, "wall_s": round(wall, 1)}  # fmt: skip
        if code != 0:
            print(f"{job.name}: failed (exit {code})\n{tail(logs / f'{job.name}.log')}")
            continue
        summary[job.name]["steps_per_s"] = last_rate(model)
        pack(model, args.out / f"{job.name}.tar.gz")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if all(s["exit"] == 0 for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
