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
