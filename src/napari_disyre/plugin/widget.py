"""The dock widget "DISYRE anomaly detection": a thin Qt shell over :func:`iter_detect`.

Detection runs in a napari thread worker that yields the engine's progress, so the viewer stays
responsive and Cancel stops the run between two batches. Thresholding, component filtering and the
lesion table are core functions re-run on the stored map when a control moves: no model re-run.
User mistakes become napari notifications, never a traceback dialog.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import DisyreError, InputError
from ..nifti import save_volume
from ..postprocess import lesion_table, threshold_mask
from ..sample_data import demo_checkpoint_path
from .layers import derived_kwargs, grid_of, layer_affine, volume_from_layer

if TYPE_CHECKING:
    import napari

    from ..detection import Detection

SLIDER_TICKS = 1000
DEVICES = ("auto", "cuda", "mps", "cpu")
METHODS = ("mean-single-step", "multi-step-restoration")  # engine.METHODS, without importing torch
LESION_COLUMNS = ("lesion", "voxels", "volume (mL)", "peak", "mean")


class DetectionWidget(QWidget):
    """Pick a scan and a checkpoint, detect, threshold, inspect lesions, export."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.detection: Detection | None = None
        self.source: Image | None = None  # the scan layer the current outputs belong to
        self.worker = None
        self._checkpoints: dict[str, Any] = {}  # loaded once per path
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # -- layout -----------------------------------------------------------------------------------

    def _build(self) -> None:
        self.layer_box = QComboBox()
        self.checkpoint_edit = QLineEdit(
            str(demo_checkpoint_path()) if demo_checkpoint_path().exists() else ""
        )
        self.checkpoint_edit.setPlaceholderText("checkpoint folder or .safetensors file")
        browse_file, browse_folder = QPushButton("File..."), QPushButton("Folder...")
        browse_file.clicked.connect(lambda: self._browse(folder=False))
        browse_folder.clicked.connect(lambda: self._browse(folder=True))
        self.checkpoint_info = QLabel(
            "bundled demo T1 model" if self.checkpoint_edit.text() else "no checkpoint"
        )
        self.checkpoint_info.setWordWrap(True)
        self.steps = QSpinBox(minimum=1, maximum=100, value=4)
        self.method = QComboBox()
        self.method.addItems(METHODS)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.detect_button, self.cancel_button = QPushButton("Detect anomalies"), QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.detect_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar(maximum=SLIDER_TICKS)
        self.status = QLabel("")
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal, maximum=SLIDER_TICKS)
        self.threshold_box = QDoubleSpinBox(decimals=4, singleStep=0.001, maximum=1e9, minimum=-1e9)
        self.min_size = QSpinBox(minimum=0, maximum=10**7, value=10)
        self.threshold_slider.valueChanged.connect(self._slider_moved)
        self.threshold_box.valueChanged.connect(self._update_mask)
        self.min_size.valueChanged.connect(self._update_mask)
        self.table = QTableWidget(0, len(LESION_COLUMNS))
        self.table.setHorizontalHeaderLabels(LESION_COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.cellClicked.connect(self.jump_to_lesion)
        export_mask, export_map = QPushButton("Export mask..."), QPushButton("Export map...")
        export_mask.clicked.connect(lambda: self.export("mask"))
        export_map.clicked.connect(lambda: self.export("map"))

        form = QFormLayout()
        form.addRow("scan", self.layer_box)
        form.addRow("checkpoint", self.checkpoint_edit)
        row = QHBoxLayout()
        row.addWidget(browse_file)
        row.addWidget(browse_folder)
        form.addRow("", _wrap(row))
        form.addRow("", self.checkpoint_info)
        form.addRow("steps", self.steps)
        form.addRow("method", self.method)
        form.addRow("device", self.device)
        buttons = QHBoxLayout()
        buttons.addWidget(self.detect_button)
        buttons.addWidget(self.cancel_button)
        threshold = QHBoxLayout()
        threshold.addWidget(self.threshold_slider)
        threshold.addWidget(self.threshold_box)
        post = QFormLayout()
        post.addRow("threshold", _wrap(threshold))
        post.addRow("min. lesion size (voxels)", self.min_size)
        exports = QHBoxLayout()
        exports.addWidget(export_mask)
        exports.addWidget(export_map)
        layout = QVBoxLayout(self)
        for part in (
            _wrap(form),
            _wrap(buttons),
            self.progress,
            self.status,
            _wrap(post),
            self.table,
            _wrap(exports),
        ):
            layout.addWidget(part)

    def _browse(self, folder: bool) -> None:
        path = (
            QFileDialog.getExistingDirectory(self, "Checkpoint folder")
            if folder
            else QFileDialog.getOpenFileName(self, "Checkpoint file", filter="safetensors (*.safetensors)")[0]
        )
        if path:
            self.checkpoint_edit.setText(path)

    def _refresh_layers(self, event: Any = None) -> None:
        current = self.layer_box.currentText()
        names = [
            layer.name for layer in self.viewer.layers if isinstance(layer, Image) and not _is_output(layer)
        ]
        self.layer_box.clear()
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)

    # -- detection --------------------------------------------------------------------------------

    def run(self) -> None:
        """Start detection on the chosen layer in a background worker (ignored while one runs)."""
        if self.worker is not None:
            return
        try:
            layer = self._chosen_layer()
            volume = volume_from_layer(layer)
            checkpoint_path = self.checkpoint_edit.text().strip()
            if not checkpoint_path:
                raise InputError("choose a checkpoint (folder or .safetensors file) first.")
        except DisyreError as exc:
            show_error(str(exc))
            return
        self.worker = _detect(
            volume,
            checkpoint_path,
            self._checkpoints,
            self.steps.value(),
            self.method.currentText(),
            self.device.currentText(),
        )
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda detection: self._on_done(layer, detection))
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(lambda: self.status.setText("cancelled"))
        self.worker.finished.connect(self._on_finished)
        self.detect_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText("loading the checkpoint...")
        self.worker.start()

    def cancel(self) -> None:
        """Stop the running detection after its current batch; a no-op when nothing runs."""
        if self.worker is not None:
            self.status.setText("cancelling...")
            self.worker.quit()

    def _chosen_layer(self) -> Image:
        name = self.layer_box.currentText()
        if not name or name not in self.viewer.layers:
            raise InputError(
                "no image layer to analyse: open a NIfTI scan (File > Open) or the DISYRE demo brain."
            )
        return self.viewer.layers[name]

    def _on_progress(self, update: tuple[str, Any]) -> None:
        kind, value = update
        if kind == "checkpoint":
            self.checkpoint_info.setText(value)
        else:
            self.progress.setValue(int(value.fraction * SLIDER_TICKS))
            self.status.setText(value.describe())

    def _on_error(self, exc: Exception) -> None:
        show_error(str(exc) if isinstance(exc, DisyreError) else f"detection failed: {exc!r}")
        self.status.setText("failed")

    def _on_finished(self) -> None:
        self.worker = None
        self.detect_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_done(self, source: Image, detection: Detection) -> None:
        self.detection, self.source = detection, source
        inside = detection.anomaly_map[detection.foreground]
        high = float(np.quantile(inside, 0.999)) if inside.size else 1.0
        stack = np.stack(detection.restorations) if detection.restorations else None
        if stack is not None:
            self._show(
                Image,
                f"{source.name} restorations",
                stack,
                derived_kwargs(source, "", leading_dims=1, colormap="gray"),
            )
        self._show(
            Image,
            f"{source.name} anomaly map",
            detection.anomaly_map,
            derived_kwargs(
                source, "", colormap="inferno", blending="additive", contrast_limits=(0.0, max(high, 1e-6))
            ),
        )
        self._show(
            Labels,
            f"{source.name} anomaly mask",
            np.zeros(detection.scan.shape, np.uint8),
            derived_kwargs(source, "", opacity=0.6),
        )
        self._range = (
            float(inside.min()) if inside.size else 0.0,
            float(inside.max()) if inside.size else 1.0,
        )
        self.threshold_box.blockSignals(True)
        self.threshold_box.setValue(detection.suggested_threshold)
        self.threshold_box.blockSignals(False)
        self._sync_slider()
        self._update_mask()
        self.progress.setValue(SLIDER_TICKS)
        self.status.setText(f"done in {detection.seconds:.1f} s on {detection.device}")

    def _show(self, kind: type, name: str, data: np.ndarray, kwargs: dict[str, Any]) -> None:
        """Replace the data of the output layer ``name`` in place, or add it the first time."""
        kwargs = {**kwargs, "name": name}
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], kind):
            layer = self.viewer.layers[name]
            layer.data = data
            layer.affine = kwargs["affine"]
            if "contrast_limits" in kwargs:
                layer.contrast_limits = kwargs["contrast_limits"]
            return
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer = (
            self.viewer.add_image(data, **kwargs) if kind is Image else self.viewer.add_labels(data, **kwargs)
        )
        layer.metadata["napari_disyre_output"] = True

    # -- thresholding and lesions -----------------------------------------------------------------

    def _slider_moved(self, tick: int) -> None:
        low, high = getattr(self, "_range", (0.0, 1.0))
        self.threshold_box.setValue(low + (high - low) * tick / SLIDER_TICKS)

    def _sync_slider(self) -> None:
        low, high = self._range
        tick = 0 if high <= low else round((self.threshold_box.value() - low) / (high - low) * SLIDER_TICKS)
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(int(np.clip(tick, 0, SLIDER_TICKS)))
        self.threshold_slider.blockSignals(False)

    def current_mask(self) -> np.ndarray:
        """The mask for the current threshold and minimum size (core post-processing)."""
        assert self.detection is not None
        return threshold_mask(
            self.detection.anomaly_map,
            self.threshold_box.value(),
            min_size=self.min_size.value(),
            region=self.detection.foreground,
        )

    def _update_mask(self, *_: Any) -> None:
        if self.detection is None or self.source is None:
            return
        self._sync_slider()
        mask = self.current_mask()
        name = f"{self.source.name} anomaly mask"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = mask.astype(np.uint8)
        self.lesions = lesion_table(mask, self.detection.anomaly_map, self.detection.scan.affine)
        self.table.setRowCount(len(self.lesions))
        for row, lesion in enumerate(self.lesions):
            values = (
                row + 1,
                lesion.voxels,
                f"{lesion.volume_ml:.2f}",
                f"{lesion.peak_score:.4f}",
                f"{lesion.mean_score:.4f}",
            )
            for column, value in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(str(value)))

    def jump_to_lesion(self, row: int, column: int = 0) -> None:
        """Move the viewer's slices to the centroid of the lesion in ``row``."""
        if self.source is None or not 0 <= row < len(getattr(self, "lesions", [])):
            return
        world = self.source.data_to_world(np.asarray(self.lesions[row].centroid_voxel))
        ndim = self.viewer.dims.ndim  # spatial axes come last (the restorations add a step axis first)
        self.viewer.dims.set_point(range(ndim - len(world), ndim), tuple(float(v) for v in world))

    # -- export -----------------------------------------------------------------------------------

    def export(self, what: str, path: str | None = None) -> Path | None:
        """Write the mask (uint8) or the map (float32) as NIfTI on the scan's grid.

        Without ``path`` a save dialog asks for one (and confirms before replacing a file, so the
        choice made there is honoured); with ``path`` an existing file is never replaced.
        """
        if self.detection is None or self.source is None:
            show_error("nothing to export yet: run Detect anomalies first.")
            return None
        overwrite = False
        if path is None:
            suggestion = f"{self.source.name}_anomaly_{what}.nii.gz"
            path, _ = QFileDialog.getSaveFileName(
                self, f"Export {what}", suggestion, "NIfTI (*.nii.gz *.nii)"
            )
            if not path:
                return None
            overwrite = True  # the dialog asked
        data = self.current_mask() if what == "mask" else self.detection.anomaly_map
        grid = grid_of(data, self.source.metadata, layer_affine(self.source))
        try:
            written = save_volume(path, data, grid, kind=what, overwrite=overwrite)
        except DisyreError as exc:
            show_error(str(exc))
            return None
        show_info(f"{what} written to {written}")
        return written


# ignore_errors: the widget connects ``errored`` and shows the message; progress: napari's activity dock
@thread_worker(ignore_errors=True, progress={"desc": "DISYRE detection"})
def _detect(volume, checkpoint_path: str, cache: dict[str, Any], steps: int, method: str, device: str):
    """Load the checkpoint (once per path) and run detection, yielding progress; stops when the
    worker is quit (between two batches)."""
    from ..checkpoint import load_checkpoint
    from ..detection import default_settings, iter_detect

    if checkpoint_path not in cache:
        cache[checkpoint_path] = load_checkpoint(checkpoint_path)
    checkpoint = cache[checkpoint_path]
    yield ("checkpoint", f"{checkpoint.summary()}; device {device}")
    run = iter_detect(
        volume, checkpoint, default_settings(checkpoint, steps=steps, method=method), device=device
    )
    while True:
        try:
            yield ("progress", next(run))
        except StopIteration as stop:
            return stop.value


def _is_output(layer: Any) -> bool:
    return bool(layer.metadata.get("napari_disyre_output"))


def _wrap(layout: Any) -> QWidget:
    widget = QWidget()
    widget.setLayout(layout)
    layout.setContentsMargins(0, 0, 0, 0)
    return widget
