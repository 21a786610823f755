"""``napari-disyre detect`` on the bundled demo scan, end to end, on torch and on ONNX Runtime, for
both bundled demo models (DISYRE at its S = 4, masked Bernoulli diffusion at its L = 100).

Each run is one ``detect`` process (loading, preprocessing, restoration, writing the map), timed from
outside, with its peak resident memory (``wait4``); runs alternate (model x runtime, then again) so
that a shared CPU's load falls on all of them. The ONNX files are exported before the timed runs
(one untimed ``detect`` per model) into a fresh cache folder, as a user's second scan finds them.
The maps of the two runtimes are compared (largest difference over the largest value). Prints a
Markdown table:

    PYTHONPATH=src python benchmarks/bench_detect_runtimes.py --repeats 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("disyre", "berdiff")
RUNTIMES = ("torch", "onnxruntime")


def detect(model: str, runtime: str, out: Path, env: dict) -> tuple[float, float]:
    """Seconds and peak MiB of one ``detect`` process writing its map to ``out``."""
    from napari_disyre.sample_data import demo_checkpoint_path, demo_scan_path

    command = [sys.executable, "-m", "napari_disyre.cli", "detect", str(demo_scan_path())]
    command += ["--checkpoint", str(demo_checkpoint_path(model)), "--out-map", str(out), "--overwrite"]
    command += ["--runtime", runtime, "--device", "cpu", "-q"]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> int:
    import nibabel as nib
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    env = {**os.environ, "NAPARI_DISYRE_CACHE": str(folder / "cache")}
    for model in MODELS:  # the one-time exports, untimed
        detect(model, "onnxruntime", folder / f"{model}-warm.nii.gz", env)
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {(m, r): [] for m in MODELS for r in RUNTIMES}
    for _ in range(args.repeats):
        for key in runs:
            runs[key].append(detect(*key, folder / f"{key[0]}-{key[1]}.nii.gz", env))
    print("| model | runtime | seconds (each run) | best | peak memory (MiB) | map vs torch |")
    print("|---|---|---|---|---|---|")
    for (model, runtime), values in runs.items():
        ours = np.asarray(nib.load(folder / f"{model}-{runtime}.nii.gz").dataobj, np.float32)
        torch_map = np.asarray(nib.load(folder / f"{model}-torch.nii.gz").dataobj, np.float32)
        difference = np.abs(ours - torch_map).max() / np.abs(torch_map).max()
        seconds = ", ".join(f"{s:.1f}" for s, _ in values)
        print(
            f"| {model} | {runtime} | {seconds} | {min(s for s, _ in values):.1f} "
            f"| {max(m for _, m in values):.0f} | {difference:.1e} |"
        )
    print(f"\n{args.repeats} alternated run(s) per row; demo scan, bundled demo models, --device cpu.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
