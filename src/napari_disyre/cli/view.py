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
    demo.add_argument(
        "--method",
        choices=("disyre", "berdiff"),
        default="disyre",
        help="which bundled model the widget starts with: DISYRE (default) or masked Bernoulli diffusion",
    )
    demo.add_argument(
        "--steps", type=int, default=None, help="DISYRE's S (default: the demo checkpoint's, 4)"
    )
    demo.set_defaults(run=run_demo)


def run_view(args: argparse.Namespace) -> int:
    from ..plugin.viewer import run_viewer, show_axial, viewer_with_widget

    viewer, _ = viewer_with_widget(args.checkpoint)
    if args.scan is not None:
        viewer.open(str(args.scan), plugin="napari-disyre")
        show_axial(viewer)
    run_viewer()
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..plugin.viewer import run_viewer, screenshot_after_detection, show_axial, viewer_with_widget
    from ..sample_data import demo_checkpoint_path

    if args.steps is not None and args.method == "berdiff":
        raise InputError(
            "--steps sets DISYRE's step count; the Bernoulli diffusion model has a noise level L and a "
            "flip threshold P instead (set them in the widget): leave out --steps or --method berdiff."
        )
    checkpoint = demo_checkpoint_path(args.method)
    if not checkpoint.exists():
        raise InputError(f"the demo checkpoint is missing from the package ({checkpoint}); reinstall it.")
    viewer, widget = viewer_with_widget(checkpoint)
    viewer.open_sample("napari-disyre", "demo_brain")
    show_axial(viewer)
    if args.steps is not None:
        widget.steps.value = args.steps
    if args.screenshot is None:
        run_viewer()
        return 0
    return screenshot_after_detection(viewer, widget, args.screenshot)
