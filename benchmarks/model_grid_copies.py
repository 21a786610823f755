"""Copy training scans onto a preset's model grid, to take them to a GPU machine with a small upload.

``napari-disyre train`` moves every scan onto the model grid (for the ``small`` preset 1.5 mm, RAS)
before it cuts slices. This script does that move ahead of time, with the same code
(:func:`napari_disyre.scans.grid.model_grid`), and writes int16 NIfTI copies with their brain masks and
exclusion labels beside them, under the same relative paths and file names. Training on the copies
then finds the grid already right (no second interpolation) and keeps the same slices: the scans
shrink about 3x (1 mm to 1.5 mm) and the copies about 4x, which is what lets the 21 healthy T1 brains
and the BraTS scans travel to a lent GPU together (the device tool uploads at most 64 MiB).

    python benchmarks/model_grid_copies.py ../shared/data/healthy-t1-ds002748 .gpudata/healthy \\
        --pattern 'sub-*/anat/*_T1w.nii.gz'
    python benchmarks/model_grid_copies.py ../shared/data/brats2013 .gpudata/brats \\
        --pattern 'brats_2013_*/*_subtrMeanDivStd.nii.gz' --mask-name brainmask.nii.gz \\
        --exclude-label-name OTMultiClass.nii.gz

The copies hold research data: keep them out of the repository (the device tool's carry folder is
git-ignored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_disyre.scans.grid import model_grid
from napari_disyre.scans.nifti import load_matching, load_scan
from napari_disyre.scans.preprocessing import Preprocessing, foreground_mask, zero_background
from napari_disyre.training.presets import get_preset

INT16_MAX = 32000


def _save_int16(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """int16 with a scale factor: 1/32000 of the range, far below MRI noise."""
    peak = float(np.abs(data).max()) or 1.0
    image = nib.Nifti1Image(np.round(data / peak * INT16_MAX).astype(np.int16), affine)
    image.header.set_slope_inter(peak / INT16_MAX, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)


def _save_mask(path: Path, mask: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), path)


def copy_scan(
    scan: Path, out: Path, spec: Preprocessing, mask_name: str | None, label_name: str | None
) -> None:
    """One scan (and its mask and label) on the model grid, prepared as training would prepare it.

    This repeats the grid steps of ``prepare_scan`` but stops before its intensity scaling: scaled
    copies would be scaled again in training, where the foreground's minimum, now 0, turns into
    background (slices then differ by up to 5e-3 on sub-52, against 8e-5 for these copies)."""
    volume = load_scan(scan)
    mask = load_matching(scan.parent / mask_name, volume, what="brain mask") if mask_name else None
    foreground = foreground_mask(volume.data, mask)
    grid = model_grid(volume.data.shape, volume.affine, spec.spacing, spec.orientation)
    image = grid.to_model(zero_background(volume.data, foreground), order=1)
    on_grid = grid.to_model(foreground.astype(np.float32), order=1) >= 0.5
    image[~on_grid] = 0
    _save_int16(out / scan.name, image, grid.affine)
    if mask_name:
        _save_mask(out / mask_name, on_grid, grid.affine)
    if label_name:  # any label voxel touching a model voxel, as training's slice exclusion counts it
        label = load_matching(scan.parent / label_name, volume, what="exclusion label") > 0
        _save_mask(out / label_name, grid.to_model(label.astype(np.float32), order=1) > 0, grid.affine)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--pattern", required=True, help="glob of the scans under SOURCE")
    parser.add_argument("--preset", default="small", help="whose model grid (default: small)")
    parser.add_argument("--mask-name", default=None)
    parser.add_argument("--exclude-label-name", default=None)
    args = parser.parse_args()
    spec = get_preset(args.preset).preprocessing
    scans = sorted(args.source.glob(args.pattern))
    if not scans:
        print(f"error: nothing under {args.source} matches {args.pattern!r}", file=sys.stderr)
        return 2
    for scan in scans:
        relative = scan.parent.relative_to(args.source)
        copy_scan(
            scan,
            args.out / relative,
            spec,
            args.mask_name,
            args.exclude_label_name,
        )
        print(f"{scan} -> {args.out / relative / scan.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
