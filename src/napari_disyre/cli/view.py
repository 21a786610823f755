"""``napari-disyre view`` and ``napari-disyre demo``: napari with the DISYRE widget docked."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    view = commands.add_parser("view", help="open napari with the DISYRE widget (and a scan)")
    view.add_argument("scan", nargs="?", type=Path, help="NIfTI scan to open")
    view.add_argument("--checkpoint", "-c", type=Path, help="checkpoint to preselect")
    view.set_defaults(run=run_view)
    demo = commands.add_parser(
        "demo",
        help="napari with the bundled demo brain, the demo checkpoint and the widget",
        description="Open napari with the bundled demo brain and the DISYRE widget. With --screenshot, run "
        "detection, save a screenshot of the viewer and exit (needs a display with OpenGL, e.g. xvfb-run).",
    )
    demo.add_argument("--screenshot", type=Path, help="detect, save a screenshot here and exit")
    demo.add_argument("--steps", type=int, default=4)
    demo.set_defaults(run=run_demo)


def _viewer_with_widget(checkpoint: Path | None = None):
    import napari

    from ..plugin.widget import DetectionWidget

    viewer = napari.Viewer(title="napari-disyre")
    widget = DetectionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="DISYRE anomaly detection", area="right")
    if checkpoint is not None:
        widget.checkpoint_edit.setText(str(checkpoint))
    return viewer, widget


def _show_axial(viewer) -> None:
    """Slice along the last world axis (axial for RAS-like scans), the way radiologists browse."""
    viewer.dims.order = (2, 1, 0)


def run_view(args: argparse.Namespace) -> int:
    import napari

    viewer, _ = _viewer_with_widget(args.checkpoint)
    if args.scan is not None:
        viewer.open(str(args.scan), plugin="napari-disyre")
        _show_axial(viewer)
    napari.run()
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import napari

    from ..errors import InputError
    from ..sample_data import demo_checkpoint_path

    if not demo_checkpoint_path().exists():
        raise InputError(
            f"the demo checkpoint is missing from the package ({demo_checkpoint_path()}); reinstall it."
        )
    viewer, widget = _viewer_with_widget(demo_checkpoint_path())
    viewer.open_sample("napari-disyre", "demo_brain")
    _show_axial(viewer)
    widget.steps.setValue(args.steps)
    if args.screenshot is None:
        napari.run()
        return 0
    return _screenshot(viewer, widget, args.screenshot)


def _screenshot(viewer, widget, path: Path) -> int:
    """Detect, show the slice with the largest lesion, save the viewer's canvas and close."""
    import time

    from qtpy.QtWidgets import QApplication

    widget.run()
    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.02)
    if widget.detection is None:
        return 1
    if getattr(widget, "lesions", None):
        widget.jump_to_lesion(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False)
    viewer.close()
    print(f"screenshot written to {path}")
    return 0
