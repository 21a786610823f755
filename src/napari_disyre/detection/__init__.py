"""The detection wing: the seam between the methods and the pipeline both share.

``detectors`` is the seam, the only module that knows both methods: it tells them apart
(:func:`checkpoint_kind`), loads either (:func:`load_checkpoint`) and gives their settings.
``pipeline`` takes a scan to the model grid, runs the detector and brings the map back
(:func:`detect`); ``postprocess`` thresholds and lists lesions; ``saved_maps`` caches raw maps;
``display`` chooses colour ranges; ``checkpoint_cache`` keeps the last model loaded; ``sharding``
splits a cohort between processes.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_EXPORTS = {
    "load_checkpoint": "detectors",
    "checkpoint_kind": "detectors",
    "checkpoint_fingerprint": "detectors",
    "default_settings": "detectors",
    "detect": "pipeline",
    "iter_detect": "pipeline",
    "Detection": "pipeline",
    "threshold_mask": "postprocess",
    "lesion_table": "postprocess",
}

__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
