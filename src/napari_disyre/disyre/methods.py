"""The names of the restoration methods: the one list that the engine, checkpoints, CLI and widget share.

``mean-single-step`` restores the original window at every timestep (the paper's evaluation
default); ``multi-step-restoration`` carries the restored window on from step to step. A checkpoint
records its default method by name, the CLI offers these names as choices and the widget as a combo
box, so a new method is added here once and appears everywhere. This module imports nothing heavy:
the napari widget reads it while napari starts.
"""

from __future__ import annotations

from typing import Literal, get_args

Method = Literal["mean-single-step", "multi-step-restoration"]
METHODS: tuple[str, ...] = get_args(Method)
DEFAULT_METHOD: Method = "mean-single-step"
