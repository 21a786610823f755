"""The lesion table under the detection form: one row per connected component of the mask.

It is plain Qt because magicgui has no table widget with click signals; the rows come from
:func:`~napari_disyre.detection.postprocess.lesion_table` and the widget decides what a click does.
Largest first; a click on a column header sorts by it (peak score: the most anomalous first), and
each row keeps its lesion, so "jump to lesion" follows the row clicked whatever the order. An empty
table says in one line why it is empty (no run yet, the mask layer removed, a failed run), so a
table that no longer matches the layers is never left on screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from qtpy.QtCore import QRectF, Qt
from qtpy.QtGui import QPainter, QTextOption
from qtpy.QtWidgets import QHeaderView, QSizePolicy, QTableWidget, QTableWidgetItem

if TYPE_CHECKING:
    from qtpy.QtGui import QPaintEvent

    from ..detection.postprocess import Lesion

LESION_COLUMNS = ("lesion", "voxels", "volume (mL)", "peak", "mean")
NO_RUN_YET = "Detect anomalies to list the lesions"
SORT_KEY = Qt.ItemDataRole.UserRole  # the number a cell sorts by (its text is rounded)


class _Cell(QTableWidgetItem):
    """A cell that sorts by its number, not by its text ("10" after "9")."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        return self.data(SORT_KEY) < other.data(SORT_KEY)


class LesionTable(QTableWidget):
    """Read-only, every column as wide as its text and all of them visible in the dock."""

    def __init__(self) -> None:
        super().__init__(0, len(LESION_COLUMNS))
        self.lesions: list[Lesion] = []
        self.empty_reason = NO_RUN_YET
        self.setHorizontalHeaderLabels(LESION_COLUMNS)
        for column in range(1, len(LESION_COLUMNS)):  # a first click sorts the largest values first
            self.horizontalHeaderItem(column).setData(
                Qt.ItemDataRole.InitialSortOrderRole, Qt.SortOrder.DescendingOrder
            )
        self.horizontalHeader().setToolTip("Click a column to sort by it (peak: most anomalous first)")
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)  # the "lesion" column numbers the rows
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Expanding)
        self.horizontalHeader().setSortIndicator(1, Qt.SortOrder.DescendingOrder)
        self.setSortingEnabled(True)
        self.fit()

    def show_lesions(self, lesions: Sequence[Lesion]) -> None:
        """One row per lesion (number, voxels, volume, peak and mean score), in the chosen order."""
        self.setSortingEnabled(False)  # rows would move while they are filled
        self.lesions = list(lesions)
        self.setRowCount(len(lesions))
        for row, lesion in enumerate(lesions):
            values = (
                (row + 1, str(row + 1)),
                (lesion.voxels, str(lesion.voxels)),
                (lesion.volume_ml, f"{lesion.volume_ml:.2f}"),
                (lesion.peak_score, f"{lesion.peak_score:.4f}"),
                (lesion.mean_score, f"{lesion.mean_score:.4f}"),
            )
            for column, (key, text) in enumerate(values):
                cell = _Cell(text)
                cell.setData(SORT_KEY, key)
                self.setItem(row, column, cell)
        self.setSortingEnabled(True)  # sorts by the header's column and order
        self.empty_reason = "No lesion at this threshold"
        self.fit()

    def sort_by(self, column: str) -> None:
        """Sort by ``column`` (one of :data:`LESION_COLUMNS`), largest first, as a header click does."""
        self.sortItems(LESION_COLUMNS.index(column), Qt.SortOrder.DescendingOrder)

    def lesion_at(self, row: int) -> Lesion | None:
        """The lesion shown in ``row`` (None outside the table)."""
        item = self.item(row, 0) if 0 <= row < self.rowCount() else None
        return None if item is None else self.lesions[int(item.data(SORT_KEY)) - 1]

    def clear_with(self, reason: str) -> None:
        """Empty the table and say why in one line (drawn where the rows were)."""
        self.lesions = []
        self.setRowCount(0)
        self.empty_reason = reason
        self.viewport().update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        super().paintEvent(event)
        if self.rowCount() == 0 and self.empty_reason:
            painter = QPainter(self.viewport())
            painter.setPen(self.palette().placeholderText().color())
            option = QTextOption(Qt.AlignmentFlag.AlignCenter)
            option.setWrapMode(QTextOption.WrapMode.WordWrap)
            painter.drawText(QRectF(self.viewport().rect()), self.empty_reason, option)
            painter.end()

    def fit(self) -> None:
        """Keep every column visible: the dock is at least as wide as they are."""
        self.resizeColumnsToContents()
        width = self.horizontalHeader().length() + self.frameWidth() * 2
        self.setMinimumWidth(width + self.verticalScrollBar().sizeHint().width())
