"""Errors that reach users: each says what was wrong, with which file, and what to do.

The CLI prints them without a traceback and the napari widget shows them as notifications; any other
exception is a bug in this package and keeps its traceback.
"""

from __future__ import annotations


class DisyreError(Exception):
    """A problem with the user's input that they can fix; the message says how.

    ``title`` is the reason in a few words ("Not a checkpoint"), for places that show one short line
    before the rest (napari's notifications show about 40 characters until expanded); each subclass
    has a default, and a raise site may give a sharper one.
    """

    title = "Cannot do that"

    def __init__(self, message: str, *, title: str | None = None) -> None:
        super().__init__(message)
        if title is not None:
            self.title = title


class InputError(DisyreError):
    """A scan, mask or label volume that cannot be used as it is."""

    title = "Input cannot be used"


class CheckpointError(DisyreError):
    """A checkpoint that is missing, malformed or of an unsupported architecture."""

    title = "Checkpoint not usable"


class OutputExistsError(DisyreError):
    """An output file exists and overwriting was not asked for."""

    title = "Output file exists"


class OutputError(DisyreError):
    """An output that cannot be written where it was asked for (read-only folder, a clash with an input
    or with another output)."""

    title = "Output cannot be written"


def reason_first(message: str, first_line_chars: int = 70) -> str:
    """``message`` rearranged for a notification that shows only its first line until expanded.

    Messages here read ``PATH: reason. What to do.``; a long path pushes the reason out of sight. This
    puts the reason's first sentence on the first line (cut at a word if still long), the rest of
    the reason on the next, then the path in full.
    """
    path, sep, reason = message.partition(": ")
    if not sep or not _looks_like_path(path):
        path, reason = "", message
    reason = reason[:1].upper() + reason[1:]
    cut = min((i + 1 for i in (reason.find(". "), reason.find("; ")) if i >= 0), default=len(reason))
    headline, rest = reason[:cut].strip(), reason[cut:].strip()
    if len(headline) > first_line_chars:
        short = headline[: first_line_chars - 3].rsplit(" ", 1)[0]
        headline, rest = short + "...", ("..." + headline[len(short) :] + " " + rest).strip()
    return "\n".join(line for line in (headline, rest, f"File: {path}" if path else "") if line)


#: What napari shows of a notification before it is expanded.
SHORT_LINE_CHARS = 40


def short_first_line(message: str, title: str, *, title_first: bool = False) -> str:
    """``message`` for a notification whose first line must fit :data:`SHORT_LINE_CHARS`, the path
    last (:func:`reason_first`). The first line is ``title`` when ``title_first`` (a title given where
    the error was raised), else the reason's first sentence when it fits, else what comes before its
    first colon ("Nothing to export yet: run ..."), else ``title`` (the error class's)."""
    headline, _, rest = reason_first(message, first_line_chars=len(message)).partition("\n")
    lead, colon, tail = headline.partition(": ")
    if not title_first and len(headline) <= SHORT_LINE_CHARS:
        lines = [headline]
    elif not title_first and colon and len(lead) <= SHORT_LINE_CHARS:
        lines = [lead, tail[:1].upper() + tail[1:]]
    else:
        lines = [title[:SHORT_LINE_CHARS], headline]
    return "\n".join([*lines, rest] if rest else lines)


def _looks_like_path(text: str) -> bool:
    return bool(text) and ("/" in text or "\\" in text or text.lower().endswith(_FILE_ENDINGS))


_FILE_ENDINGS = (".nii", ".nii.gz", ".safetensors", ".json", ".csv", ".pt", ".yaml")
