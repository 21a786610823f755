"""Lazy re-exports for the package namespaces, so that importing a namespace stays cheap.

``napari_disyre`` and its wings (``training``, ``evaluation``) name their public objects in one table
(name -> submodule) and load a submodule only when one of its names is first used. napari imports
the package when it reads the manifest; with lazy exports it does not pay for scipy, nibabel or the
training loop until the user runs something.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``package.exports[name]`` on first use of ``name``."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
