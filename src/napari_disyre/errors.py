"""Errors that reach users: each says what was wrong, with which file, and what to do.

The CLI prints them without a traceback and the napari widget shows them as notifications; any other
exception is a bug in this package and keeps its traceback.
"""

from __future__ import annotations


class DisyreError(Exception):
    """A problem with the user's input that they can fix; the message says how."""


class InputError(DisyreError):
    """A scan, mask or label volume that cannot be used as it is."""


class CheckpointError(DisyreError):
    """A checkpoint that is missing, malformed or of an unsupported architecture."""


class OutputExistsError(DisyreError):
    """An output file exists and overwriting was not asked for."""


class OutputError(DisyreError):
    """An output that cannot be written where it was asked for (read-only folder, a clash with an input
    or with another output)."""


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


def _looks_like_path(text: str) -> bool:
    return bool(text) and ("/" in text or "\\" in text or text.lower().endswith(_FILE_ENDINGS))


_FILE_ENDINGS = (".nii", ".nii.gz", ".safetensors", ".json", ".csv", ".pt", ".yaml")
