"""Build the bundled demo scan: the MNI152 ICBM 2009 T1 template with two synthetic lesions.

The template comes from nilearn's wheel (``pip install nilearn``; only this script needs it). The
lesions are generated procedurally with a fixed seed and are T1-like: a 3 cm tumour-like mass (dark
necrotic core inside a mildly dark oedema rim, irregular outline) in the right fronto-parietal white
matter, and a 9 mm MS-like "black hole" next to the left lateral ventricle. The ground truth is
every voxel the lesions changed. The scan is cropped to the brain and stored as uint8, as the
template is.

    python scripts/make_demo_data.py [--template PATH] [--out src/napari_disyre/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

SEED = 20261123
MARGIN = 4  # voxels of background kept around the brain


def template_path() -> Path:
    import nilearn

    return (
        Path(nilearn.__file__).parent
        / "datasets"
        / "data"
        / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    )


def irregular_blob(
    shape: tuple[int, ...], centre_vox: np.ndarray, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """Distance-like field (< 1 inside) of a lumpy sphere: a radius modulated by smooth noise."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), axis=-1)
    offset = grid - centre_vox
    distance = np.linalg.norm(offset, axis=-1)
    noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma=radius / 2.5)
    noise /= np.abs(noise).max() + 1e-6
    return distance / (radius * (1.0 + 0.35 * noise))


def add_lesions(
    t1: np.ndarray, affine: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    brain = t1 > 0
    csf = np.percentile(t1[brain], 5)
    out = t1.astype(np.float32)
    lesion = np.zeros(t1.shape, dtype=bool)
    inverse = np.linalg.inv(affine)
    # (world centre in mm, radius in mm, core intensity as a fraction of the way to CSF, rim width)
    specs = [((28.0, -12.0, 28.0), 15.0, 0.85, 0.35), ((-22.0, -30.0, 18.0), 4.5, 0.7, 0.0)]
    for centre_mm, radius, core_depth, rim in specs:
        centre = (inverse @ np.array([*centre_mm, 1.0]))[:3]
        field = irregular_blob(t1.shape, centre, radius, rng)
        whole = (field < 1.0) & brain
        core = field < (1.0 - rim)
        # intensity change: deep in the core, partial in the oedema rim, smoothed edges, mottled texture
        depth = np.where(core, core_depth, 0.35)
        texture = 1.0 + 0.15 * ndimage.gaussian_filter(rng.normal(size=t1.shape), 1.0)
        change = ndimage.gaussian_filter((whole * depth * texture).astype(np.float32), 0.8)
        target = out + change * (csf - out)
        changed = np.abs(target - out) >= 1.0
        out = np.where(brain, target, 0)
        lesion |= changed & brain & (field < 1.15)
    return np.clip(np.round(out), 0, 255).astype(np.uint8), lesion


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--template", type=Path, default=None)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/napari_disyre/data"
    )
    args = parser.parse_args()
    image = nib.load(args.template or template_path())
    t1 = np.asarray(image.dataobj)
    scan, lesion = add_lesions(t1, image.affine, np.random.default_rng(SEED))
    box = tuple(slice(max(int(i.min()) - MARGIN, 0), int(i.max()) + 1 + MARGIN) for i in np.nonzero(t1 > 0))
    affine = image.affine.copy()
    affine[:3, 3] = (image.affine @ np.array([*(s.start for s in box), 1.0]))[:3]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in (
        ("demo_t1_scan.nii.gz", scan[box]),
        ("demo_t1_lesion.nii.gz", lesion[box].astype(np.uint8)),
    ):
        out = nib.Nifti1Image(data, affine)
        out.header.set_xyzt_units("mm")
        out.set_qform(affine, code=4)  # MNI152 space
        out.set_sform(affine, code=4)
        nib.save(out, args.out / name)
    print(
        f"scan {scan[box].shape}, lesion {int(lesion.sum())} voxels ({100 * lesion.sum() / (t1 > 0).sum():.2f} % of the brain)"
    )


if __name__ == "__main__":
    main()
