"""The README's pictures (docs/screenshot.png, docs/steps.gif) show the widget as it is now.

``scripts/make_readme_media.py`` writes ``docs/media_controls.json`` beside the pictures: the dock
widget's controls, top to bottom, when they were made. A freshly built widget must have the same
controls; when it does not (a control added, removed, renamed, moved, shown or hidden), the pictures
are out of date and this test fails until they are made again.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("napari")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_readme_media.py"


def _media_script():
    spec = importlib.util.spec_from_file_location("make_readme_media", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def viewer(request):
    """As in test_plugin: napari's test viewer where OpenGL is available, else the Qt-free model."""
    import os

    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        from napari.components import ViewerModel
        from napari.plugins import _initialize_plugins

        _initialize_plugins()
        return ViewerModel()
    return request.getfixturevalue("make_napari_viewer")()


def test_the_readme_pictures_show_the_widget_as_it_is(qtbot, viewer):
    from napari_disyre.plugin.widget import DetectionWidget

    media = _media_script()
    record_path = ROOT / "docs" / media.CONTROLS_RECORD
    assert record_path.is_file(), f"{record_path} is missing: run `{media.REMAKE}`"
    recorded = json.loads(record_path.read_text())["controls"]

    widget = DetectionWidget(viewer)  # the bundled demo checkpoint chosen, as the script has it
    qtbot.addWidget(widget)
    now = media.widget_controls(widget)

    def lines(controls: list[dict]) -> list[str]:
        return [json.dumps(control, sort_keys=True) for control in controls]

    if now != recorded:
        import difflib

        diff = "\n".join(difflib.unified_diff(lines(recorded), lines(now), "recorded", "now", lineterm=""))
        pytest.fail(
            "The widget's controls differ from those in the README's pictures "
            f"(docs/{media.CONTROLS_RECORD}):\n{diff}\n"
            f"Make the pictures again (it needs a display; xvfb-run gives one): {media.REMAKE}",
            pytrace=False,
        )
