"""The dock widget "DISYRE anomaly detection": a magicgui form over :func:`iter_detect`.

The form (scan layer, checkpoint, steps, method, device, threshold) is built from magicgui widgets,
napari's own toolkit: the scan combo box takes its choices from the viewer's image layers and is
refreshed by napari whenever layers change, ``FileEdit`` picks the checkpoint. Choosing a checkpoint
sets the step count and method to the checkpoint's own defaults, as the command line does; a masked
Bernoulli diffusion checkpoint shows its noise level L and flip threshold P instead, and its run adds
a flip-mask layer. A checkpoint of several contrasts replaces the scan picker with one picker per
contrast (:mod:`~napari_disyre.plugin.contrast_pickers`) and adds a map layer per contrast; the
threshold, lesion table and export act on the combined map. Qt remains only for the lesion table (:mod:`~napari_disyre.plugin.lesion_table`). Detection runs in a napari thread worker
(:mod:`~napari_disyre.plugin.worker`), so the viewer stays responsive and Cancel stops the run
between two batches. Thresholding, component filtering and the lesion table are core functions
re-run on the stored map when a control moves: no model re-run. User mistakes become napari
notifications, never a traceback dialog.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    RadioButtons,
    Slider,
    SpinBox,
)
from napari.layers import Image
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..detection.checkpoint_cache import CheckpointCache
from ..detection.detectors import checkpoint_kind, read_contrasts
from ..detection.postprocess import lesion_table, threshold_mask
from ..disyre.checkpoint import read_checkpoint_info
from ..errors import CheckpointError, DisyreError, InputError
from ..runtime.devices import DEVICE_CHOICES
from ..runtime.sessions import RUNTIME_CHOICES
from ..sample_data import demo_checkpoint_path
from .comparison import LabelComparison
from .contrast_pickers import ContrastPickers
from .export import export_layer
from .following import follow_viewer, run_stopped
from .kept_results import compare_results, keep_current
from .layers import volume_from_layer
from .lesion_table import LesionTable
from .method_controls import MethodControls
from .notices import describe, show_problem, wrap_within_dock
from .postprocess_controls import PostprocessControls
from .results import find_result, is_output, show_detection
from .worker import detection_worker

if TYPE_CHECKING:
    import napari

    from ..detection.pipeline import Detection
    from ..restoration import Progress

SLIDER_TICKS = 1000
CHECKPOINT_KINDS = {"folder": "d", ".safetensors file": "r"}  # magicgui FileEdit modes


class DetectionWidget(QWidget):
    """Pick a scan and a checkpoint, detect, threshold, inspect lesions, export."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.detection: Detection | None = None
        self.source: Image | None = None  # the scan layer the current outputs belong to
        self.worker = None
        self.checkpoints = CheckpointCache()  # the last model, reloaded when its files change
        self._build()
        # napari calls reset_choices on docked widgets when layers change; undocked (tests, scripts)
        # the widget asks for the same events itself
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.reset_choices)
        follow_viewer(self)  # the table cleared when its layers go; the step slider named 1 to S
        demo = demo_checkpoint_path()
        if demo.exists():
            self.checkpoint.value = demo

    # -- layout -----------------------------------------------------------------------------------

    def _build(self) -> None:
        self.scan = ComboBox(label="scan", choices=self._scan_choices)
        self.contrast_pickers = ContrastPickers(self._scan_choices)  # several contrasts: one per contrast
        self.checkpoint_kind = RadioButtons(
            label="checkpoint is a", choices=tuple(CHECKPOINT_KINDS), value="folder", orientation="horizontal"
        )
        self.checkpoint = FileEdit(label="checkpoint", mode="d", nullable=True)
        self.checkpoint_info = Label(label="", value="no checkpoint")
        wrap_within_dock(self.checkpoint_info)
        self.controls = MethodControls()  # steps, method, fast (DISYRE) or L and P (berdiff)
        self.steps, self.method, self.fast = self.controls.steps, self.controls.method, self.controls.fast
        self.berdiff = self.controls.berdiff
        self.device = ComboBox(label="device", choices=DEVICE_CHOICES)
        self.runtime = ComboBox(label="runtime", choices=RUNTIME_CHOICES)  # auto: ONNX Runtime on a CPU
        self.detect_button = PushButton(text="Detect anomalies")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="", max=SLIDER_TICKS, value=0)
        self.status = Label(label="", value="")
        self.threshold_slider = Slider(label="", max=SLIDER_TICKS, readout=False)
        self.threshold_box = FloatSpinBox(label="threshold", min=-1e9, max=1e9, step=0.0001)  # 4 decimals
        self.min_size = SpinBox(label="min. lesion size (voxels)", min=0, max=10**7, value=10)
        self.postprocess = PostprocessControls()  # erosion, median: on the stored map
        self.comparison = LabelComparison(self.viewer)  # Dice against a labels layer
        export_mask, export_map = PushButton(text="Export mask..."), PushButton(text="Export map...")
        keep, compare = PushButton(text="Keep this result"), PushButton(text="Compare side by side")
        self.checkpoint_kind.changed.connect(self._kind_changed)
        self.checkpoint.changed.connect(self._checkpoint_changed)
        self.detect_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.threshold_slider.changed.connect(self._slider_moved)
        self.threshold_box.changed.connect(self._update_mask)
        self.min_size.changed.connect(self._update_mask)
        for control in self.postprocess.widgets:
            control.changed.connect(self._postprocess)
        export_mask.changed.connect(lambda: self.export("mask"))
        export_map.changed.connect(lambda: self.export("map"))
        keep.changed.connect(self.keep_result)
        compare.changed.connect(self.compare)
        self.form = Container(
            widgets=[
                self.scan,
                self.contrast_pickers.container,
                self.checkpoint_kind,
                self.checkpoint,
                self.checkpoint_info,
                *self.controls.widgets,
                self.device,
                self.runtime,
                Container(
                    widgets=[self.detect_button, self.cancel_button], layout="horizontal", labels=False
                ),
                self.progress,
                self.status,
                self.threshold_slider,
                self.threshold_box,
                self.min_size,
                *self.postprocess.widgets,
                *self.comparison.widgets,
            ]
        )
        self.table = LesionTable()
        self.table.cellClicked.connect(self.jump_to_lesion)
        exports = Container(widgets=[export_mask, export_map], layout="horizontal", labels=False)
        results = Container(widgets=[keep, compare], layout="horizontal", labels=False)
        layout = QVBoxLayout(self)
        for part in (self.form.native, self.table, exports.native, results.native):
            layout.addWidget(part)

    def reset_choices(self, *_: Any) -> None:
        """Refresh the scan choices from the viewer's layers (napari calls this on docked widgets)."""
        self.form.reset_choices()
        self.contrast_pickers.prefill()

    def _scan_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Image) and not is_output(layer)
        ]

    # -- the checkpoint ---------------------------------------------------------------------------

    def _kind_changed(self, kind: str) -> None:
        self.checkpoint.mode = CHECKPOINT_KINDS[kind]
        self.checkpoint.filter = "*.safetensors" if CHECKPOINT_KINDS[kind] == "r" else None

    def _checkpoint_changed(self, path: Path | None) -> None:
        """Show what the chosen checkpoint is and take its default steps and method (as the CLI does)."""
        if path is None or not str(path).strip():
            self.checkpoint_info.value = "no checkpoint"
            return
        kind = ".safetensors file" if Path(path).is_file() else "folder"
        if self.checkpoint_kind.value != kind:
            self.checkpoint_kind.value = kind
        try:
            self.contrast_pickers.show(read_contrasts(path))
            self.scan.visible = not self.contrast_pickers.active
            if checkpoint_kind(path) == "berdiff":
                self.checkpoint_info.value = self.berdiff.take_defaults(path)
                self.postprocess.take_defaults(None)
                return self.controls.show("berdiff")
            info = read_checkpoint_info(path)
            self.postprocess.take_defaults(info.postprocessing)
        except DisyreError as exc:
            self.checkpoint_info.value = describe(exc)
            return
        self.controls.take_disyre_defaults(info.steps, info.method)
        described = "bundled demo T1 model" if Path(path) == demo_checkpoint_path() else info.description
        contrast = f"{' + '.join(info.contrasts) or info.contrast or ''} model".lstrip()
        self.checkpoint_info.value = f"{described or contrast}; defaults S = {info.steps}, {info.method}"

    # -- detection --------------------------------------------------------------------------------

    def run(self) -> None:
        """Start detection on the chosen layer in a background worker (ignored while one runs)."""
        if self.worker is not None:
            return
        try:
            if self.contrast_pickers.active:
                volume, layer = self.contrast_pickers.scan()
            else:
                layer = self._chosen_layer()
                volume = volume_from_layer(layer)
            checkpoint_path = self.checkpoint.value
            if checkpoint_path is None or not str(checkpoint_path).strip():
                raise InputError("no checkpoint chosen: choose a folder or a .safetensors file first.")
        except DisyreError as exc:
            show_problem(exc)
            return
        self.worker = detection_worker(
            volume,
            str(checkpoint_path),
            self.checkpoints,
            self.controls.overrides(),
            self.device.value,
            self.runtime.value,
        )
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda detection: self._on_done(layer, detection))
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(lambda: run_stopped(self, "cancelled"))
        self.worker.finished.connect(self._on_finished)
        self.detect_button.enabled, self.cancel_button.enabled = False, True
        self.progress.value = 0
        self.status.value = "loading the checkpoint..."
        self.worker.start()

    def cancel(self) -> None:
        """Stop the running detection after its current batch; a no-op when nothing runs."""
        if self.worker is not None:
            self.status.value = "cancelling..."
            self.worker.quit()

    def _chosen_layer(self) -> Image:
        layer = self.scan.value
        if layer is None or layer not in self.viewer.layers:
            raise InputError(
                "no image layer to analyse: open a NIfTI scan (File > Open) or the DISYRE demo brain."
            )
        return layer

    def _on_progress(self, update: str | Progress) -> None:
        if isinstance(update, str):  # which model runs where
            self.checkpoint_info.value = update
        else:
            self.progress.value = int(update.fraction * SLIDER_TICKS)
            self.status.value = update.describe()

    def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, CheckpointError):  # the caption must not claim a model is loaded
            self.checkpoint_info.value = describe(exc)
        if isinstance(exc, DisyreError):
            show_problem(exc)
        else:  # a bug in this package: its traceback is in napari's log
            show_problem(repr(exc), title="Detection failed")
        run_stopped(self, "failed")

    def _on_finished(self) -> None:
        self.worker = None
        self.detect_button.enabled, self.cancel_button.enabled = True, False

    def _on_done(self, source: Image, detection: Detection) -> None:
        self.raw_map = detection.anomaly_map  # what the model made; the controls post-process it
        detection.anomaly_map = self.postprocess.value().apply(self.raw_map, detection.foreground)
        self.detection, self.source = detection, source
        inside = detection.anomaly_map[detection.foreground]
        self._range = (
            float(inside.min()) if inside.size else 0.0,
            float(inside.max()) if inside.size else 1.0,
        )
        with self.threshold_box.changed.blocked():
            self.threshold_box.value = detection.suggested_threshold
        show_detection(self.viewer, source, detection, self.threshold_box.value)
        self._sync_slider()
        self._update_mask()
        self.progress.value = SLIDER_TICKS
        self.status.value = f"done in {detection.seconds:.1f} s on {detection.device}"

    def _postprocess(self, *_: Any) -> None:
        """Re-apply erosion and median to the stored map, show it, and re-threshold."""
        if self.detection is None or self.source is None:
            return
        try:
            processed = self.postprocess.value().apply(self.raw_map, self.detection.foreground)
        except DisyreError as exc:
            return show_problem(exc)
        self.detection.anomaly_map = processed
        layer = find_result(self.viewer, self.source.name).anomaly_map
        if layer is not None:
            layer.data = processed
        self._update_mask()

    # -- thresholding and lesions -----------------------------------------------------------------

    def _slider_moved(self, tick: int) -> None:
        low, high = getattr(self, "_range", (0.0, 1.0))
        self.threshold_box.value = low + (high - low) * tick / SLIDER_TICKS

    def _sync_slider(self) -> None:
        low, high = self._range
        tick = 0 if high <= low else round((self.threshold_box.value - low) / (high - low) * SLIDER_TICKS)
        with self.threshold_slider.changed.blocked():
            self.threshold_slider.value = int(np.clip(tick, 0, SLIDER_TICKS))

    def current_mask(self) -> np.ndarray:
        """The mask for the current threshold and minimum size (core post-processing)."""
        assert self.detection is not None
        return threshold_mask(
            self.detection.anomaly_map,
            self.threshold_box.value,
            min_size=self.min_size.value,
            region=self.detection.foreground,
        )

    def _update_mask(self, *_: Any) -> None:
        if self.detection is None or self.source is None:
            return
        self._sync_slider()
        layer = find_result(self.viewer, self.source.name).mask
        if layer is None:  # removed by the user: the table stays cleared (plugin.following)
            return
        mask = self.current_mask()
        layer.data = mask.astype(np.uint8)
        self.lesions = lesion_table(mask, self.detection.anomaly_map, self.detection.scan.affine)
        self.table.show_lesions(self.lesions)
        self.comparison.update(mask, self.source)

    def jump_to_lesion(self, row: int, column: int = 0) -> None:
        """Move the viewer's slices to the centroid of the lesion shown in ``row`` (any sort order)."""
        lesion = self.table.lesion_at(row)
        if self.source is None or lesion is None:
            return
        world = self.source.data_to_world(np.asarray(lesion.centroid_voxel))
        ndim = self.viewer.dims.ndim  # spatial axes come last (the restorations add a step axis first)
        self.viewer.dims.set_point(range(ndim - len(world), ndim), tuple(float(v) for v in world))

    # -- export -----------------------------------------------------------------------------------

    def export(self, what: str, path: str | None = None) -> Path | None:
        """Write the mask or map layer as NIfTI on the scan's grid (:func:`export_layer`): what the
        layers hold now. Without ``path`` a save dialog opens beside the scan."""
        if self.detection is None or self.source is None:
            show_problem("Nothing to export yet: run Detect anomalies first.")
            return None
        return export_layer(self.viewer, self.source, what, path, parent=self)

    # -- comparing results ------------------------------------------------------------------------

    def keep_result(self) -> str | None:
        """Keep the current result's layers under a name that says how they were made; the next run
        makes new layers beside them (:mod:`~napari_disyre.plugin.kept_results`)."""
        return keep_current(self)

    def compare(self) -> None:
        """Show every result on the chosen scan side by side in napari's grid (click again to undo)."""
        compare_results(self)
