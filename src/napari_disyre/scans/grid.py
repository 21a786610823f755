"""The model's voxel grid: reorienting and resampling a scan to it, and every output back to the scan.

A checkpoint may declare the voxel spacing and orientation it was trained at (for example 1.5 mm,
RAS). A scan of another grid (0.87 mm LAS, an oblique acquisition) is brought onto a grid of that
spacing whose axes follow the declared orientation and which covers the same field of view, the
network runs there, and the results are resampled onto the scan's exact voxels. Pure axis flips
and permutations are done by reindexing (lossless); a change of spacing uses linear interpolation
through nibabel.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from nibabel.processing import resample_from_to

from ..errors import InputError


@dataclass(frozen=True)
class ModelGrid:
    """Where the network sees the scan: a shape and affine, and how it relates to the scan's grid."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    transform: np.ndarray  # nibabel orientation transform from source axes to model axes
    resampled: bool  # False when only axes are flipped/permuted (exact reindexing)

    @property
    def identity(self) -> bool:
        return not self.resampled and bool(np.all(self.transform == [[0, 1], [1, 1], [2, 1]]))

    def to_model(self, data: np.ndarray, order: int = 1) -> np.ndarray:
        """Scan-grid array to model grid (``order`` 0 for masks, 1 for intensities)."""
        if self.identity:
            return data
        reoriented = apply_orientation(data, self.transform)
        if not self.resampled:
            return np.ascontiguousarray(reoriented)
        reoriented_affine = self.source_affine @ inv_ornt_aff(self.transform, self.source_shape)
        return _resample(reoriented, reoriented_affine, self.shape, self.affine, order)

    def to_source(self, data: np.ndarray, order: int = 1) -> np.ndarray:
        """Model-grid array back onto the scan's exact voxel grid."""
        if self.identity:
            return data
        if self.resampled:
            return _resample(data, self.affine, self.source_shape, self.source_affine, order)
        inverse = ornt_transform(io_orientation(self.affine), io_orientation(self.source_affine))
        return np.ascontiguousarray(apply_orientation(data, inverse))


#: A model grid larger than this (a 512 mm cube at 1 mm) is no brain: a wrong voxel size would make it.
MAX_MODEL_VOXELS = 512**3


def model_grid(
    shape: tuple[int, int, int],
    affine: np.ndarray,
    spacing: tuple[float, float, float] | None,
    orientation: str | None,
) -> ModelGrid:
    """The grid a checkpoint with the given spacing/orientation (None: keep the scan's) works on."""
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    source_ornt = io_orientation(affine)
    target_ornt = axcodes2ornt(tuple(orientation.upper())) if orientation else source_ornt
    transform = ornt_transform(source_ornt, target_ornt)
    reoriented_shape = tuple(int(shape[int(i)]) for i in transform[:, 0].argsort())
    reoriented_affine = affine @ inv_ornt_aff(transform, shape)
    current = np.sqrt((reoriented_affine[:3, :3] ** 2).sum(axis=0))
    if spacing is None or np.allclose(current, spacing, rtol=1e-4):
        return ModelGrid(
            shape=reoriented_shape,  # type: ignore[arg-type]
            affine=reoriented_affine,
            source_shape=shape,  # type: ignore[arg-type]
            source_affine=np.asarray(affine, dtype=np.float64),
            transform=transform,
            resampled=False,
        )
    ratio = np.asarray(spacing, dtype=np.float64) / current
    new_shape = tuple(int(np.ceil(n / r - 1e-6)) for n, r in zip(reoriented_shape, ratio, strict=True))
    if float(np.prod(new_shape, dtype=np.float64)) > MAX_MODEL_VOXELS:
        extent = np.asarray(reoriented_shape) * current
        raise InputError(
            f"the scan spans {'x'.join(f'{e:.0f}' for e in extent)} mm (voxels of "
            f"{'x'.join(f'{c:.3g}' for c in current)} mm): on the model's {spacing} mm grid that is "
            f"{'x'.join(map(str, new_shape))} voxels, far more than a brain needs (at most {MAX_MODEL_VOXELS:.0e}). "
            "Check the voxel sizes in its header (pixdim or sform): they are probably wrong."
        )
    # New voxel j sits at old voxel coordinate ratio * j + (ratio - 1) / 2: the fields of view share
    # their first edge, so the new grid covers the old one.
    scale = np.diag([*ratio, 1.0])
    scale[:3, 3] = (ratio - 1) / 2
    return ModelGrid(
        shape=new_shape,  # type: ignore[arg-type]
        affine=reoriented_affine @ scale,
        source_shape=shape,  # type: ignore[arg-type]
        source_affine=np.asarray(affine, dtype=np.float64),
        transform=transform,
        resampled=True,
    )


def _resample(
    data: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], target_affine: np.ndarray, order: int
) -> np.ndarray:
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    out = resample_from_to(image, (shape, target_affine), order=order, mode="nearest")
    return np.asarray(out.dataobj, dtype=np.float32)
