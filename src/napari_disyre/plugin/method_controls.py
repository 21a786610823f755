"""The widget's controls for how a checkpoint restores: DISYRE's steps, method and fast mode, or
masked Bernoulli diffusion's L and P, whichever the chosen checkpoint's method takes.

Kept apart from ``widget.py`` so that the form's layout and the run stay short there: this class
takes a checkpoint's own defaults (as the command line does) and says what the run asks of it.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox, SpinBox

from ..disyre.methods import METHODS
from .berdiff_controls import BerDiffControls


class MethodControls:
    """Steps, method and fast mode (DISYRE) or L and P (berdiff); only the chosen method's show."""

    def __init__(self) -> None:
        self.kind = "disyre"
        self.steps = SpinBox(label="steps", min=1, max=100, value=4)
        self.method = ComboBox(label="method", choices=METHODS)
        self.fast = CheckBox(text="fast mode (windows step by half a window)", value=False)
        self.fast.changed.connect(self._fast_toggled)
        self.berdiff = BerDiffControls()  # L and P, instead of steps and method for berdiff
        self.widgets = [self.steps, self.method, self.fast, *self.berdiff.widgets]

    def show(self, kind: str) -> None:
        """DISYRE: steps and method; masked Bernoulli diffusion: L and P."""
        self.kind = kind
        for control in self.widgets:
            control.visible = (control in self.berdiff.widgets) == (kind == "berdiff")

    def take_disyre_defaults(self, steps: int, method: str) -> None:
        self.show("disyre")
        self.steps.value = steps
        self.method.value = method

    def _fast_toggled(self, on: bool) -> None:
        """Fast mode runs one step, as ``--fast`` does; the spin box still lets the user ask for more."""
        if on:
            self.steps.value = 1

    def overrides(self) -> dict[str, Any]:
        """What the visible controls ask of the run (the worker applies them to the checkpoint's)."""
        if self.kind == "berdiff":
            return self.berdiff.overrides()
        return {"steps": self.steps.value, "method": self.method.value, "fast": self.fast.value or None}
