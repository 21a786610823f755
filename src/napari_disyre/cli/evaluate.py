"""``napari-disyre evaluate``: the paper's metrics on labelled scans."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Added with the evaluation report."""
