"""Make the README's picture and animation from the current code: napari with the DISYRE widget on
the bundled demo brain, after Detect anomalies with the bundled T1 model.

    xvfb-run -a -s "-screen 0 1600x1000x24" env QT_QPA_PLATFORM=xcb \
        python scripts/make_readme_media.py [--out docs] [--steps 4]

Writes ``screenshot.png`` (the window at 1600 x 1000: the slice through most of the demo's true
lesion with the map and the mask's outline on the scan, the widget beside it), ``steps.gif`` (the canvas while the
step slider goes through the restorations with the map accumulated so far drawn over them) and
``media_controls.json``: the widget's controls, in order, as they were when the pictures were made.
``tests/test_readme_media.py`` compares a freshly built widget with that record, so that a change to
the widget's controls fails the tests until the pictures are made again with this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_disyre.plugin.viewer import settle

CONTROLS_RECORD = "media_controls.json"
REMAKE = 'xvfb-run -a -s "-screen 0 1600x1000x24" env QT_QPA_PLATFORM=xcb python scripts/make_readme_media.py'
WINDOW = (1600, 1000)
GIF_WIDTH = 480  # pixels; keeps the animation well under 2 MB
FRAME_MS = 900


def widget_controls(widget) -> list[dict]:
    """The dock widget's controls from top to bottom: each one's kind, what it is labelled with (a
    magicgui label, a button's or check box's text, a table's column headers) and whether it shows
    for the checkpoint chosen (a DISYRE one shows steps and method, a Bernoulli diffusion one L and P)."""
    from magicgui.widgets import Container

    controls: list[dict] = []

    def add(native, kind: str, **labels) -> None:
        controls.append({"kind": kind, **labels, "shown": bool(native.isVisibleTo(widget))})

    def walk(container: Container) -> None:
        for control in container:
            if isinstance(control, Container):
                walk(control)
                continue
            labels = {"label": control.label} if control.label else {}
            if getattr(control, "text", None):  # buttons and check boxes say what they do
                labels["text"] = control.text
            add(control.native, type(control).__name__, **labels)

    layout = widget.layout()
    for index in range(layout.count()):
        native = layout.itemAt(index).widget()
        magic = getattr(native, "_magic_widget", None)  # magicgui's own widget behind a Qt one
        if isinstance(magic, Container):
            walk(magic)
        elif hasattr(native, "horizontalHeaderItem"):  # the lesion table
            columns = [native.horizontalHeaderItem(c).text() for c in range(native.columnCount())]
            add(native, type(native).__name__, columns=columns)
        else:
            add(native, type(native).__name__)
    return controls


def controls_record(controls: list[dict]) -> str:
    """The record as JSON text, one control a line (so that a change reads as a one-line diff)."""
    head = {
        "what": "the DISYRE dock widget's controls, top to bottom, when the pictures beside this file were made",
        "remake": REMAKE,
    }
    lines = [f" {json.dumps(key)}: {json.dumps(value)}," for key, value in head.items()]
    listed = ",\n".join(f"  {json.dumps(control)}" for control in controls)
    return "{\n" + "\n".join(lines) + f'\n "controls": [\n{listed}\n ]\n}}\n'


def detect(widget) -> None:
    widget.run()
    while widget.worker is not None:
        settle(0.05)
    if widget.detection is None:
        sys.exit(f"detection failed: {widget.status.value}")


def show_largest_true_lesion(viewer) -> None:
    """Move to the axial slice holding most of the demo's ground-truth lesion voxels."""
    truth = viewer.layers["demo ground truth"]
    z = int(np.argmax(truth.data.sum(axis=(0, 1))))
    viewer.dims.set_point(viewer.dims.ndim - 1, float(truth.data_to_world([0, 0, z])[2]))


def step_frames(viewer, group: str) -> list[np.ndarray]:
    """One canvas image per step (the step's restoration under the map accumulated so far), then the
    scan with the final map and the mask's outline."""
    restorations = viewer.layers[f"{group} restorations"]
    step_maps = viewer.layers[f"{group} accumulated map by step"]
    final = [viewer.layers[f"{group} {role}"] for role in ("anomaly map", "anomaly mask")]
    visible = [layer.visible for layer in final]
    for layer in final:
        layer.visible = False
    restorations.visible = step_maps.visible = True
    step_axis = next(i for i, label in enumerate(viewer.dims.axis_labels) if label.startswith("step"))
    frames = []
    for step in range(restorations.data.shape[0]):
        viewer.dims.set_point(step_axis, step)
        viewer.text_overlay.text = f"step {step + 1} of {restorations.data.shape[0]}: restoration, map so far"
        settle(0.3)
        frames.append(viewer.screenshot(canvas_only=True, flash=False))
    for layer, was in zip(final, visible, strict=True):
        layer.visible = was
    restorations.visible = step_maps.visible = False
    viewer.text_overlay.text = "the scan, the final map, the mask at the suggested threshold"
    settle(0.3)
    frames.append(viewer.screenshot(canvas_only=True, flash=False))
    viewer.text_overlay.visible = False
    return frames


def save_gif(frames: list[np.ndarray], path: Path) -> None:
    from PIL import Image

    images = []
    for frame in frames:
        image = Image.fromarray(frame[..., :3])
        height = round(image.height * GIF_WIDTH / image.width)
        images.append(image.resize((GIF_WIDTH, height), Image.Resampling.LANCZOS).quantize(colors=128))
    durations = [FRAME_MS] * (len(images) - 1) + [3 * FRAME_MS]  # linger on the final map
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--steps", type=int, default=None, help="default: the demo checkpoint's")
    args = parser.parse_args()

    from napari_disyre.plugin.viewer import show_axial, viewer_with_widget
    from napari_disyre.sample_data import demo_checkpoint_path

    viewer, widget = viewer_with_widget(demo_checkpoint_path())
    controls = widget_controls(widget)  # as built, before a run: what the test builds too
    viewer.window._qt_window.resize(*WINDOW)
    viewer.window._qt_window.show()
    viewer.open_sample("napari-disyre", "demo_brain")
    show_axial(viewer)
    if args.steps is not None:
        widget.steps.value = args.steps
    widget.device.value = "cpu"
    detect(widget)
    show_largest_true_lesion(viewer)
    viewer.text_overlay.visible = True
    viewer.text_overlay.position = "top_left"
    viewer.text_overlay.font_size = 14
    frames = step_frames(viewer, widget.source.name)
    args.out.mkdir(parents=True, exist_ok=True)
    save_gif(frames, args.out / "steps.gif")
    settle(1.0)
    viewer.screenshot(str(args.out / "screenshot.png"), canvas_only=False, flash=False)
    (args.out / CONTROLS_RECORD).write_text(controls_record(controls))
    print(f"wrote {args.out / 'screenshot.png'}, {args.out / 'steps.gif'} and {args.out / CONTROLS_RECORD}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
