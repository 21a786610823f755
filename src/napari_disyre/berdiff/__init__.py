"""Masked Bernoulli diffusion (Wolleb et al., MICCAI 2024): the second anomaly detector.

A binarising autoencoder turns each 2D slice into a binary latent code; a diffusion model with
Bernoulli noise on that code predicts, per bit, the probability that it was flipped; at inference the
bits the model wants to flip (flip probability above ``P``) are replaced by its prediction and the
decoded result is compared with the slice. The equations follow ``docs/berdiff-method.md`` (the
official code as it runs), with the places where this package departs from it said in each module.

The authors' own checkpoints convert into this package's folder with ``official`` (their latent UNet,
with its official names and arithmetic, is ``official_unet``); ``gates`` decides whether a training
run learned enough to be called done.

Importing this package is cheap: torch and diffusers load only with the submodules that need them
(``autoencoder``, ``bernoulli``, ``latent_unet``, ``official_unet``, ``official``, ``inference``,
``training``, ``gates``, ``checkpoint``).
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_EXPORTS = {
    "BerDiffModel": "checkpoint",
    "load_berdiff": "checkpoint",
    "save_berdiff": "checkpoint",
    "InferenceSettings": "inference",
    "restore_slices": "inference",
    "BerDiffRunConfig": "run",
    "import_official": "official",
    "OfficialSettings": "official",
    "QualityGates": "gates",
    "train_berdiff": "run",
    "get_berdiff_preset": "presets",
    "is_berdiff_folder": "layout",
    "read_berdiff_metadata": "layout",
}

__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
