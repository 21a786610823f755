"""The widget's image-layer pickers for a checkpoint of several contrasts, and their map layers.

A model of C contrasts needs one scan per contrast: :class:`ContrastPickers` shows one combo box per
contrast, labelled with its name and pre-filled with the first image layer whose name contains it
(case-insensitive: "BraTS_001_FLAIR" for "flair"), in place of the one scan picker. The chosen
layers become a :class:`~napari_disyre.scans.contrasts.MultiContrastScan`, whose grid check refuses
layers that do not lie voxel for voxel on one grid. Kept apart from ``widget.py`` so the one-contrast
form stays as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container

from ..errors import InputError
from ..scans.contrasts import MultiContrastScan
from .layers import derived_kwargs, volume_from_layer

if TYPE_CHECKING:
    from napari.layers import Image

    from ..detection.pipeline import Detection

CHANNEL_MAP = "anomaly map"  # a contrast's map layer: "<scan> anomaly map (<contrast>)"


class ContrastPickers:
    """One image-layer combo box per contrast; empty and hidden for a one-contrast checkpoint."""

    def __init__(self, choices: Callable[[Any], list[tuple[str, Any]]]):
        self.choices = choices
        self.container = Container(widgets=[], visible=False)
        self.contrasts: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return len(self.contrasts) > 1

    def show(self, contrasts: tuple[str, ...]) -> None:
        """One picker per contrast for a multi-contrast checkpoint, none otherwise."""
        self.contrasts = contrasts if len(contrasts) > 1 else ()
        self.container.clear()
        for contrast in self.contrasts:
            self.container.append(ComboBox(label=contrast, choices=self.choices, nullable=True))
        self.container.visible = self.active
        self.prefill()

    def prefill(self) -> None:
        """Each picker not already on a layer named for its contrast takes the first one that is."""
        for picker in self.container:
            name = picker.label.lower()
            if picker.value is not None and name in picker.value.name.lower():
                continue
            named = [layer for label, layer in self.choices(picker) if name in label.lower()]
            if named:
                picker.value = named[0]

    def scan(self) -> tuple[MultiContrastScan, Image]:
        """The chosen layers as one input (grids checked), and the layer the results belong to."""
        layers = {picker.label: picker.value for picker in self.container}
        missing = [contrast for contrast, layer in layers.items() if layer is None]
        if missing:
            raise InputError(f"choose an image layer for each contrast of this model: {', '.join(missing)}.")
        scan = MultiContrastScan({c: volume_from_layer(layer) for c, layer in layers.items()})
        return scan, next(iter(layers.values()))


def channel_layers(detection: Detection, source: Image) -> list[tuple[str, Any, dict[str, Any]]]:
    """``(role, data, kwargs)`` of a multi-contrast result's extra layers: one map per contrast
    (hidden, beside the combined map) and each contrast's per-step restorations (hidden)."""
    layers = []
    for contrast, channel_map in detection.channel_maps.items():
        layers.append((f"{CHANNEL_MAP} ({contrast})", channel_map, derived_kwargs(source, "", visible=False)))
    if detection.channel_maps and detection.restorations:
        for c, contrast in enumerate(detection.contrasts):
            steps = np.stack([r[c] for r in detection.restorations])
            kwargs = derived_kwargs(source, "", leading_dims=1, visible=False, colormap="gray")
            layers.append((f"restorations ({contrast})", steps, {**kwargs, "contrast_limits": (0.0, 1.0)}))
    return layers
