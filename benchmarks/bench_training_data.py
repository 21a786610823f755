"""Throughput of the training-batch pipeline: corrupted crops per second, by worker processes.

On a GPU the network trains faster than one CPU core makes DAG-corrupted crops (an H200 sat at 3-5
steps/s of 64 crops with no workers), so ``napari-disyre train --workers N`` makes batches in N
processes. This measures the pipeline alone, without a network: batches of 64 crops of 96 x 96
(the ``small`` preset) cut from the bundled demo scan at 1.5 mm. Prints a Markdown table:

    python benchmarks/bench_training_data.py --workers 0 1 2
"""

from __future__ import annotations

import argparse
import os
import time

from napari_disyre.disyre.schedule import Schedule
from napari_disyre.sample_data import demo_scan_path
from napari_disyre.training.dataset import CorruptedSlices, SliceBank, TrainingScan, training_batches
from napari_disyre.training.presets import get_preset


def crops_per_second(stream: CorruptedSlices, workers: int, batches: int, size: int) -> float:
    """Steady-state rate: the first batch (worker start-up) is not timed."""
    iterator = training_batches(stream, 0, batches + 1, size, workers)
    next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    preset = get_preset("small")
    bank = SliceBank.from_scans([TrainingScan(demo_scan_path())], preset.preprocessing)
    stream = CorruptedSlices(bank, Schedule(), (0, 0), crop=preset.crop)
    print(
        f"{os.cpu_count()} CPU cores; batches of {args.batch_size} crops of {preset.crop} x {preset.crop}\n"
    )
    print("| workers | crops/s | speed-up |\n|---|---|---|")
    base = None
    for workers in args.workers:
        rate = crops_per_second(stream, workers, args.batches, args.batch_size)
        base = base or rate
        print(f"| {workers} | {rate:.0f} | {rate / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
