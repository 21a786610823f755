"""The ``napari-disyre`` command line: detect, train, evaluate, info, view and demo.

Each subcommand parses its options and calls the Qt-free library; a :class:`DisyreError` is printed
as one clear message (exit status 2), anything else keeps its traceback because it is a bug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import DisyreError

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.run(args) or 0)
    except DisyreError as exc:
        print(f"napari-disyre {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="napari-disyre",
        description="Unsupervised anomaly detection in brain MRI with DISYRE (detect, train, evaluate, info).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import detect, evaluate, info, train, view

    for module in (detect, train, evaluate, info, view):
        module.register(commands)
    return parser
