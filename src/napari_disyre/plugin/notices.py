"""What the widget tells the user: notifications whose first line can be read, a caption that wraps.

napari shows about 40 characters of a notification until it is expanded, so the first line is the
reason in a few words and the whole reason, the fix and the file follow
(:func:`~napari_disyre.errors.short_first_line`). The checkpoint caption under the file picker can
be long (a refusal names the folder in full): it wraps inside the dock and never widens it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari.utils.notifications import show_error
from qtpy.QtWidgets import QSizePolicy

from ..errors import DisyreError, short_first_line

if TYPE_CHECKING:
    from magicgui.widgets import Label

def describe(problem: DisyreError | str, title: str | None = None) -> str:
    """The text shown for ``problem``: its reason in at most 40 characters on the first line, then
    the rest. ``title``, or one given where the error was raised, comes first; else the error's own
    words when short enough, else its class's title."""
    given = title or (vars(problem).get("title") if isinstance(problem, DisyreError) else None)
    fallback = getattr(problem, "title", DisyreError.title)
    return short_first_line(str(problem), given or fallback, title_first=given is not None)


def show_problem(problem: DisyreError | str, title: str | None = None) -> None:
    """A napari error notification for a mistake the user can fix (never a traceback dialog)."""
    show_error(describe(problem, title))


def wrap_within_dock(label: Label) -> None:
    """Let ``label`` take the dock's width, whatever its text: it wraps at words and after the
    slashes of a path (Qt's line breaking), grows in height only, and asks for no width of its own."""
    native = label.native
    native.setWordWrap(True)
    native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    native.setMinimumWidth(1)

