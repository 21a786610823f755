"""The widget's "compare with" a labels layer: Dice of the current mask against a reference.

A gold standard or a BraTS segmentation opens as a labels layer (the reader tells label volumes from
images); choosing it here shows the Dice, precision and recall of the anomaly mask against its
non-zero voxels (:func:`~napari_disyre.evaluation.metrics.dice_precision_recall`, the metric the
evaluation reports), refreshed each time the mask changes: live as the threshold moves.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Label
from napari.layers import Labels

from .layers import layer_affine
from .results import is_output

if TYPE_CHECKING:
    import napari
    from napari.layers import Image


class LabelComparison:
    """A choice of labels layer and the line that scores the mask against it."""

    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer
        self.reference = ComboBox(label="compare with", choices=self._choices)
        self.score = Label(label="Dice", value="")
        self.widgets = [self.reference, self.score]
        self.reference.changed.connect(self._show)
        self._mask: np.ndarray | None = None
        self._scan: Image | None = None
        self._show()

    def _choices(self, _widget: Any = None) -> list[tuple[str, Labels]]:
        """The viewer's labels layers, except the masks this plugin made."""
        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and not is_output(layer)
        ]

    def update(self, mask: np.ndarray | None, scan: Image | None = None) -> None:
        """Score ``mask`` (on ``scan``'s grid) against the chosen layer; None: nothing to score."""
        self._mask, self._scan = mask, scan
        self._show()

    def _show(self, *_: Any) -> None:
        reference = self.reference.value
        if reference is None or reference not in self.viewer.layers:
            self.score.value = "open a label file to compare with"
        elif self._mask is None or self._scan is None:
            self.score.value = "no mask yet"
        elif reference.data.shape != self._mask.shape or not np.allclose(
            layer_affine(reference), layer_affine(self._scan), atol=1e-3
        ):
            self.score.value = f"'{reference.name}' is not on the scan's grid"
        else:
            from ..evaluation.metrics import dice_precision_recall  # scikit-learn: loaded when first used

            dice, precision, recall = dice_precision_recall(self._mask, np.asarray(reference.data))
            self.score.value = f"{_two(dice)} (precision {_two(precision)}, recall {_two(recall)})"


def _two(value: float) -> str:
    """A ratio to 3 decimals; "n/a" when it has no denominator (nothing predicted or labelled)."""
    return "n/a" if math.isnan(value) else f"{value:.3f}"
