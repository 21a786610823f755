"""The DISYRE wing: restoration of a slice stack by a diffusion-trained UNet, and its checkpoints.

``engine`` runs the S-step restoration window by window (``windows``: the layout and blending,
``restoration_maps``: the accumulated maps, ``acceleration``: batching and channels_last), with the
timesteps of ``schedule`` and the network of ``unet``; ``checkpoint`` reads and writes its three
checkpoint forms (``checkpoint_checks``: the sizes a real model has); ``methods`` names the two
restoration methods. Nothing here knows the other method: ``detection.detectors`` is the seam.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_EXPORTS = {
    "Checkpoint": "checkpoint",
    "CheckpointInfo": "checkpoint",
    "load_disyre_checkpoint": "checkpoint",
    "read_checkpoint_info": "checkpoint",
    "save_checkpoint": "checkpoint",
    "RestorationSettings": "engine",
    "restore": "engine",
    "Schedule": "schedule",
    "METHODS": "methods",
    "DEFAULT_METHOD": "methods",
}

__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
