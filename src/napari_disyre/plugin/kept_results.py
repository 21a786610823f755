"""Keeping a result and comparing the kept ones, from the widget's two buttons.

"Keep this result" renames the current result's layers after how they were made (steps, method,
checkpoint, threshold), so that the next run makes new layers beside them and the threshold
controls stop driving the kept mask; "Compare side by side" lays every result on the chosen scan
out in napari's grid (:func:`~napari_disyre.plugin.results.toggle_comparison`). Kept apart from
``widget.py`` so that the form stays readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DisyreError
from .following import clear_lesions
from .notices import show_problem
from .results import keep_result, toggle_comparison, viewer_grid

if TYPE_CHECKING:
    from .widget import DetectionWidget


def keep_current(widget: DetectionWidget) -> str | None:
    """Keep ``widget``'s current result; returns its new group name (None: nothing to keep)."""
    if widget.detection is None or widget.source is None:
        show_problem("Nothing to keep yet: run Detect anomalies first.")
        return None
    settings = widget.detection.settings
    checkpoint = Path(str(widget.checkpoint.value)).name
    label = f"S={settings.steps} {settings.method}, {checkpoint}, t={widget.threshold_box.value:.4f}"
    kept = keep_result(widget.viewer, widget.source.name, label)
    widget.detection = None  # the threshold controls no longer drive the kept mask
    clear_lesions(widget, "Result kept: detect again for a new table")
    return kept


def compare_results(widget: DetectionWidget) -> None:
    """Show every result on the chosen scan side by side (again: back to one view)."""
    try:
        scan = widget._chosen_layer()
    except DisyreError as exc:
        show_problem(exc)
        return
    undo = viewer_grid(widget.viewer).enabled
    if toggle_comparison(widget.viewer, scan) < 2 and not undo:
        show_problem(
            "Only one result to compare: click Keep this result, change the steps or the checkpoint, "
            "and detect again."
        )
