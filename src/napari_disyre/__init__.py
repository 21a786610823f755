"""napari-disyre: unsupervised anomaly detection in brain MRI with DISYRE.

The package is a Qt-free library (this namespace), a command line (``napari-disyre``) and a napari
plugin (``napari.yaml``). Importing it is cheap: torch and diffusers load only when a checkpoint is
opened or a detection runs, so napari starts as fast with the plugin installed as without.

Quick start::

    from napari_disyre import load_checkpoint, load_scan, detect
    checkpoint = load_checkpoint("my_checkpoint")          # official layout or napari-disyre
    result = detect(load_scan("scan.nii.gz"), checkpoint)  # anomaly map on the scan's grid
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "Checkpoint": "checkpoint",
    "CheckpointInfo": "checkpoint",
    "load_scan": "nifti",
    "load_volume": "nifti",
    "save_volume": "nifti",
    "Volume": "nifti",
    "detect": "detection",
    "iter_detect": "detection",
    "Detection": "detection",
    "RestorationSettings": "engine",
    "restore": "engine",
    "threshold_mask": "postprocess",
    "lesion_table": "postprocess",
    "train": "training",
    "TrainingConfig": "training",
    "TrainingScan": "dataset",
    "DisyreError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
