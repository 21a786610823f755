"""The lesion table under the detection form: one row per connected component of the mask.

It is plain Qt because magicgui has no table widget with click signals; the rows come from
:func:`~napari_disyre.detection.postprocess.lesion_table` and the widget decides what a click does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from qtpy.QtWidgets import QHeaderView, QSizePolicy, QTableWidget, QTableWidgetItem

if TYPE_CHECKING:
    from ..detection.postprocess import Lesion

LESION_COLUMNS = ("lesion", "voxels", "volume (mL)", "peak", "mean")


class LesionTable(QTableWidget):
    """Read-only, every column as wide as its text and all of them visible in the dock."""

    def __init__(self) -> None:
        super().__init__(0, len(LESION_COLUMNS))
        self.setHorizontalHeaderLabels(LESION_COLUMNS)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)  # the "lesion" column numbers the rows
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Expanding)
        self.fit()

    def show_lesions(self, lesions: Sequence[Lesion]) -> None:
        """One row per lesion: number, voxels, volume, peak and mean score."""
        self.setRowCount(len(lesions))
        for row, lesion in enumerate(lesions):
            values = (
                row + 1,
                lesion.voxels,
                f"{lesion.volume_ml:.2f}",
                f"{lesion.peak_score:.4f}",
                f"{lesion.mean_score:.4f}",
            )
            for column, value in enumerate(values):
                self.setItem(row, column, QTableWidgetItem(str(value)))
        self.fit()

    def fit(self) -> None:
        """Keep every column visible: the dock is at least as wide as they are."""
        self.resizeColumnsToContents()
        width = self.horizontalHeader().length() + self.frameWidth() * 2
        self.setMinimumWidth(width + self.verticalScrollBar().sizeHint().width())
