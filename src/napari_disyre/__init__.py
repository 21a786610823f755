"""napari-disyre: unsupervised anomaly detection in brain MRI with DISYRE (and masked Bernoulli diffusion).

The package is a Qt-free library (this namespace), a command line (``napari-disyre``) and a napari
plugin (``napari.yaml``). Importing it is cheap: torch and diffusers load only when a checkpoint is
opened or a detection runs, so napari starts as fast with the plugin installed as without.

Quick start::

    from napari_disyre import load_checkpoint, load_scan, detect
    checkpoint = load_checkpoint("my_checkpoint")          # DISYRE (official layout or napari-disyre) or berdiff
    result = detect(load_scan("scan.nii.gz"), checkpoint)  # anomaly map on the scan's grid
    settings = default_settings(checkpoint, noise_level=50)  # a berdiff checkpoint's L, P overridden
"""

from __future__ import annotations

from .lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "load_checkpoint": "detection",
    "save_checkpoint": "disyre",
    "Checkpoint": "disyre",
    "CheckpointInfo": "disyre",
    "load_scan": "scans",
    "load_volume": "scans",
    "save_volume": "scans",
    "Volume": "scans",
    "default_settings": "detection",
    "checkpoint_kind": "detection",
    "detect": "detection",
    "iter_detect": "detection",
    "Detection": "detection",
    "RestorationSettings": "disyre",
    "restore": "disyre",
    "threshold_mask": "detection",
    "lesion_table": "detection",
    "train": "training.loop",
    "TrainingConfig": "training.config",
    "TrainingScan": "training.dataset",
    "DisyreError": "errors",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__ = lazy_getattr(__name__, _EXPORTS)
