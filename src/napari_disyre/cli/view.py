"""``napari-disyre view`` and ``napari-disyre demo``: napari with the DISYRE widget docked."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import DisyreError

#: Qt platforms that need no display server.
HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")


def register(commands: argparse._SubParsersAction) -> None:
    from ..validation import RestorationSteps, cli_type

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
    demo.add_argument(
        "--method",
        choices=("disyre", "berdiff"),
        default="disyre",
        help="which bundled model the widget starts with: DISYRE (default) or masked Bernoulli diffusion",
    )
    demo.add_argument(
        "--steps",
        type=cli_type(RestorationSteps),
        default=None,
        help="DISYRE's S (default: the demo checkpoint's, 4)",
    )
    demo.set_defaults(run=run_demo)


def require_display() -> None:
    """Refuse to start napari where Qt would find no display: Qt then aborts the whole process with a
    C++ message and no Python error to report (Linux without X11 or Wayland, e.g. over ssh)."""
    if not sys.platform.startswith("linux"):
        return
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform.startswith(HEADLESS_PLATFORMS):
        return
    wanted = ("WAYLAND_DISPLAY",) if platform.startswith("wayland") else ("DISPLAY", "WAYLAND_DISPLAY")
    if not any(os.environ.get(name) for name in wanted):
        raise DisyreError(
            f"no display to open napari on ({' and '.join(wanted)} unset{f', QT_QPA_PLATFORM={platform}' if platform else ''}). "
            "Run it on a desktop session, over `ssh -X`, or under `xvfb-run`; `napari-disyre detect` "
            "needs no display."
        )


def run_view(args: argparse.Namespace) -> int:
    from ..checkpoint_files import checkpoint_path
    from ..scans.nifti import load_scan

    if args.scan is not None:
        load_scan(args.scan)  # a wrong file is named here, not in a dialog after napari has started
    if args.checkpoint is not None:
        checkpoint_path(args.checkpoint)
    require_display()
    from ..plugin.viewer import run_viewer, show_axial, viewer_with_widget

    viewer, _ = viewer_with_widget(args.checkpoint)
    if args.scan is not None:
        viewer.open(str(args.scan), plugin="napari-disyre")
        show_axial(viewer)
    run_viewer()
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..sample_data import demo_checkpoint_path

    if args.steps is not None and args.method == "berdiff":
        raise InputError(
            "--steps sets DISYRE's step count; the Bernoulli diffusion model has a noise level L and a "
            "flip threshold P instead (set them in the widget): leave out --steps or --method berdiff."
        )
    checkpoint = demo_checkpoint_path(args.method)
    if not checkpoint.exists():
        raise InputError(f"the demo checkpoint is missing from the package ({checkpoint}); reinstall it.")
    require_display()
    from ..plugin.viewer import run_viewer, screenshot_after_detection, show_axial, viewer_with_widget

    viewer, widget = viewer_with_widget(checkpoint)
    viewer.open_sample("napari-disyre", "demo_brain")
    show_axial(viewer)
    if args.steps is not None:
        widget.steps.value = args.steps
    if args.screenshot is None:
        run_viewer()
        return 0
    return screenshot_after_detection(viewer, widget, args.screenshot)
