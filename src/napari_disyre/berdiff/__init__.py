"""Masked Bernoulli diffusion (Wolleb et al., MICCAI 2024): the second anomaly detector.

A binarising autoencoder turns each 2D slice into a binary latent code; a diffusion model with
Bernoulli noise on that code predicts, per bit, the probability that it was flipped; at inference the
bits the model wants to flip (flip probability above ``P``) are replaced by its prediction and the
decoded result is compared with the slice. The equations follow ``docs/berdiff-method.md`` (the
official code as it runs), with the places where this package departs from it said in each module.

Importing this package is cheap: torch and diffusers load only with the submodules that need them
(``autoencoder``, ``bernoulli``, ``latent_unet``, ``inference``, ``training``, ``checkpoint``).
"""

from __future__ import annotations

METHOD_NAME = "berdiff"
