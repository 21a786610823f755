"""The scans wing: NIfTI volumes in and out, and the model grid they are resampled to.

``nifti`` reads and writes volumes (checked headers, atomic writes, the scan's affine kept);
``contrasts`` holds several co-registered contrasts of one patient as one input (grids checked);
``labels`` tells label volumes (segmentations, gold standards) from images;
``grid`` computes the model grid a checkpoint asks for; ``preprocessing`` scales intensities and
resamples a scan onto that grid and back. Neither method is known here.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_EXPORTS = {
    "Volume": "nifti",
    "load_scan": "nifti",
    "load_volume": "nifti",
    "save_volume": "nifti",
    "MultiContrastScan": "contrasts",
    "load_contrasts": "contrasts",
    "as_labels": "labels",
    "Preprocessing": "preprocessing",
    "prepare_scan": "preprocessing",
    "model_grid": "grid",
}

__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
