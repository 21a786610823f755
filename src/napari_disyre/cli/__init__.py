"""The ``napari-disyre`` command line: detect, train, evaluate, info, view, demo and import-berdiff.

Each subcommand parses its options and calls the Qt-free library; a :class:`DisyreError` is printed
as one clear message (exit status 2), anything else keeps its traceback because it is a bug.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Sequence

from ..errors import DisyreError

EXIT_USER_ERROR = 2
#: Commands whose SIGTERM (kill, timeout, job schedulers) is handled like Ctrl-C: partial outputs are
#: removed, and training saves its state.
TERMINATE_CLEANLY = {"detect", "evaluate", "train"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the reason (a bad option value: exit 2; --help: 0)
        return int(exc.code or 0)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USER_ERROR
    from ..outputs import Terminated, terminate_as_interrupt

    previous_format = warnings.formatwarning  # one line per warning, restored for callers of main()
    warnings.formatwarning = lambda message, *_, **__: f"napari-disyre {args.command}: warning: {message}\n"
    try:
        with terminate_as_interrupt() if args.command in TERMINATE_CLEANLY else contextlib.nullcontext():
            return int(args.run(args) or 0)
    except DisyreError as exc:
        print(f"napari-disyre {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        print(f"napari-disyre {args.command}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        warnings.formatwarning = previous_format


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="napari-disyre",
        description="Unsupervised anomaly detection in brain MRI with DISYRE (detect, train, evaluate, info).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import detect, evaluate, import_berdiff, info, train, view

    for module in (detect, train, evaluate, info, view, import_berdiff):
        module.register(commands)
    return parser
