"""The widget's controls for a masked Bernoulli diffusion checkpoint, and its flip-mask layer.

A berdiff checkpoint is restored with a noise level L and a flip-probability threshold P, not with a
step count and a restoration method, and its map compares the restoration with the input (official)
or with the autoencoder's reconstruction; :class:`BerDiffControls` holds the three inputs, takes L and P
defaults from ``berdiff.json`` (torch-free, when the checkpoint is chosen) and says what the run
asks. Kept apart from ``widget.py`` so the DISYRE form stays as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, FloatSpinBox, SpinBox

from ..berdiff.layout import read_berdiff_metadata
from ..validation import MAP_REFERENCES


class BerDiffControls:
    """L, P and the map's reference; hidden until a berdiff checkpoint is chosen."""

    def __init__(self) -> None:
        self.noise_level = SpinBox(label="noise level L", min=1, max=999, value=100, visible=False)
        self.flip_threshold = FloatSpinBox(
            label="flip threshold P", min=0.0, max=1.0, step=0.01, value=0.6, visible=False
        )
        self.reference = ComboBox(
            label="map against", choices=list(MAP_REFERENCES), value="input", visible=False
        )
        self.reference.tooltip = (
            "input: the official map; reconstruction: the autoencoder's own error cancels, only what "
            "the latent diffusion changed remains"
        )
        self.widgets = [self.noise_level, self.flip_threshold, self.reference]

    def take_defaults(self, path: str | Path) -> str:
        """Set L and P to the checkpoint's and the map to the official one; returns the line the
        widget shows about it."""
        meta = read_berdiff_metadata(path)
        inference = meta.get("inference", {})
        self.noise_level.value = int(inference.get("noise_level", 100))
        self.flip_threshold.value = float(inference.get("threshold", 0.6))
        self.reference.value = "input"
        described = meta.get("description") or "masked Bernoulli diffusion model"
        return f"{described}; defaults L = {self.noise_level.value}, P = {self.flip_threshold.value:g}"

    def overrides(self) -> dict[str, Any]:
        return {
            "noise_level": self.noise_level.value,
            "threshold": self.flip_threshold.value,
            "reference": self.reference.value,
        }


def flip_mask_kwargs(derived: dict[str, Any], flip_mask: np.ndarray) -> dict[str, Any]:
    """How the flip mask (fraction of latent bits flipped, 0 to 1) is drawn over the scan: its colour
    range ends at its own maximum, since a mask that peaks at 0.05 is invisible in a 0-1 range."""
    peak = float(np.max(flip_mask, initial=0.0))
    limits = (0.0, peak if peak > 0 else 1.0)
    return {**derived, "colormap": "cyan", "blending": "additive", "contrast_limits": limits}
