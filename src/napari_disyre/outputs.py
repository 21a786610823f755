"""Atomic, no-clobber output: a reader never sees half a file, and a user's file is never replaced
unless they asked for it.

Every writer of the package (NIfTI maps and masks, checkpoints, reports) goes through
:func:`atomic_output`: the content is written to a hidden temporary sibling, then moved into place in
one step. Without ``overwrite`` the move is done by a hard link, which fails if the target appeared in
the meantime, so even a race cannot clobber an existing file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputExistsError

#: Multi-part extensions that writers (nibabel, safetensors) use to pick the format.
_KNOWN_EXTENSIONS = (".nii.gz", ".tar.gz")


def split_extension(path: Path) -> tuple[str, str]:
    """Split ``map.nii.gz`` into ``("map", ".nii.gz")`` (plain ``suffix`` would give ``.gz``)."""
    name = path.name
    for ext in _KNOWN_EXTENSIONS:
        if name.lower().endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext) :]
    return path.stem, path.suffix


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Fail early, before any long work, if ``path`` exists and may not be replaced."""
    if not overwrite and Path(path).exists():
        raise OutputExistsError(
            f"{path} already exists and was left untouched. Choose another output name, or allow "
            "replacing it (--overwrite on the command line, overwrite=True in Python)."
        )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` in one step.

    The temporary keeps the extension of ``path`` so that format-by-extension writers work. Missing
    parent folders are created. On any error the temporary is removed and ``path`` is untouched.
    Works for files and for folders (a checkpoint folder is written whole, then renamed).
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, ext = split_extension(path)
    tmp = path.with_name(f".{stem}.partial-{secrets.token_hex(4)}{ext}")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to the temporary file for {path}")
        _move_into_place(tmp, path, overwrite)
    finally:
        _remove(tmp)


def _move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    if tmp.is_dir():
        if path.exists():
            refuse_existing(path, overwrite)
            backup = path.with_name(f".{path.name}.replaced-{secrets.token_hex(4)}")
            path.rename(backup)
            tmp.rename(path)
            _remove(backup)
        else:
            tmp.rename(path)
        return
    _usual_permissions(tmp)
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path exists: no clobbering even in a race
    except FileExistsError:
        refuse_existing(path, overwrite=False)
    except OSError:  # file systems without hard links
        refuse_existing(path, overwrite=False)
        os.replace(tmp, path)


def _usual_permissions(path: Path) -> None:
    """Give a written file the permissions of any new file (0o666 less the umask). Some writers
    (safetensors) create theirs readable by their owner alone, which hides a lab's shared model from
    the colleagues it is meant for."""
    if os.name == "posix":
        os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """The process's umask, read from /proc where there is one: ``os.umask`` can only be read by
    setting it, which races with threads that create files meanwhile (the napari worker does)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` as indented JSON, atomically, replacing ``path`` (a run's own bookkeeping files)."""
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
