"""How many sliding windows of real brain volumes are empty, partly empty or full (no network run).

The engine skips windows whose input is all zero (provably no change to the map). Windows partly
outside the brain cannot be skipped: their brain pixels get scores from them. This counts, for each
BraTS 2018 T1 volume (1 mm, 240 x 240 x 155, axial slices with a non-zero voxel), the official
128 x 128 windows at the official step (32) and at fast mode's (64), on whole slices and on the
non-zero box the evaluation crops to, and prints the share of network evaluations each kind costs.

    python benchmarks/window_census.py [../shared/data/brats2018]
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_disyre.disyre.engine import _window_jobs
from napari_disyre.disyre.windows import window_layout
from napari_disyre.scans.preprocessing import foreground_bbox


def census(slices: np.ndarray, overlap: float) -> tuple[int, int, int]:
    """(all-zero, partly empty, full) windows of a stack of slices."""
    layout = window_layout(slices.shape[1:], (128, 128), overlap)
    jobs = _window_jobs(layout.pad(slices), layout)
    return int((~jobs.nonzero).sum()), int((jobs.nonzero & ~jobs.full).sum()), int(jobs.full.sum())


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/brats2018")
    scans = sorted(root.glob("Brats18_*/*_t1.nii.gz"))
    if not scans:
        print(f"no BraTS 2018 T1 scans under {root}")
        return 1
    totals = {}
    for path in scans:
        volume = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        stack = np.moveaxis(volume, 2, 0)
        stack = stack[stack.reshape(len(stack), -1).any(1)]
        cropped = stack[(slice(None), *foreground_bbox(stack != 0)[1:])]
        for where, data in (("whole slices", stack), ("non-zero box", cropped)):
            for overlap in (0.25, 0.5):
                counts = census(data, overlap)
                key = (where, overlap)
                totals[key] = tuple(a + b for a, b in zip(totals.get(key, (0, 0, 0)), counts, strict=True))
    print(f"{len(scans)} BraTS 2018 T1 volumes, 128 x 128 windows\n")
    print(
        "| slices | window step | windows | all-zero (skipped) | partly empty (run) | full (run) | partly empty share of evaluations |"
    )
    print("|---|---|---|---|---|---|---|")
    for (where, overlap), (zero, partial, full) in totals.items():
        total = zero + partial + full
        print(
            f"| {where} | {int(overlap * 128)} | {total} | {zero} ({zero / total:.0%}) | {partial} ({partial / total:.0%}) "
            f"| {full} ({full / total:.0%}) | {partial / (partial + full):.0%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
