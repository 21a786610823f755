"""The detection the widget runs off the GUI thread: a napari thread worker around :func:`iter_detect`.

It lives outside the widget class so that what runs in the background is visible at a glance: load
the checkpoint through the widget's :class:`~napari_disyre.detection.checkpoint_cache.CheckpointCache`, say
which model runs where, then pass on the engine's progress until the detection returns. Quitting
the worker stops it between two batches.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from napari.qt.threading import thread_worker

if TYPE_CHECKING:
    from ..detection.checkpoint_cache import CheckpointCache
    from ..detection.pipeline import Detection
    from ..restoration import Progress
    from ..scans.contrasts import MultiContrastScan
    from ..scans.nifti import Volume


# ignore_errors: the widget connects ``errored`` and shows the message; progress: napari's activity dock
@thread_worker(ignore_errors=True, progress={"desc": "DISYRE detection"})
def detection_worker(
    volume: Volume | MultiContrastScan,
    checkpoint_path: str,
    cache: CheckpointCache,
    overrides: dict[str, Any],
    device: str,
    runtime: str = "auto",
) -> Generator[str | Progress, None, Detection]:
    """Yield a one-line description of the loaded model, then :class:`~napari_disyre.restoration.Progress`
    events; return the :class:`~napari_disyre.detection.pipeline.Detection`. ``overrides`` are the settings the
    widget's controls show (steps and method, or L and P), applied to the checkpoint's own; ``runtime``
    evaluates the networks (exporting them for ONNX Runtime shows as a stage of the progress)."""
    from ..detection.detectors import default_settings
    from ..detection.pipeline import iter_detect

    checkpoint = cache.get(checkpoint_path)
    yield f"{checkpoint.summary()}; device {device}, runtime {runtime}"
    settings = default_settings(checkpoint, **overrides)
    keep_step_maps = checkpoint.kind == "disyre"  # the map after each DISYRE step, for the step slider
    return (
        yield from iter_detect(
            volume, checkpoint, settings, device=device, keep_step_maps=keep_step_maps, runtime=runtime
        )
    )
