"""``napari-disyre view`` and ``napari-disyre demo``."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Added with the napari plugin."""
