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
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError, OutputExistsError

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


def check_writable(path: Path) -> None:
    """Fail before any long work if ``path`` could not be created: its folder (or the nearest one that
    exists) must be a folder this process may write in. A read-only mount or an immutable folder is
    found by creating and removing a hidden probe file, which is what a write will need."""
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    fix = "Choose an output folder you can write to."
    if not folder.is_dir():
        raise OutputError(f"{path}: cannot be written, {folder} is a file, not a folder. {fix}")
    probe = folder / f".napari-disyre-probe-{secrets.token_hex(4)}"
    try:
        probe.touch(exist_ok=False)
    except OSError as exc:
        raise OutputError(
            f"{path}: cannot be written, {folder} is not writable ({exc.strerror}). {fix}"
        ) from None
    with contextlib.suppress(OSError):
        probe.unlink()


def refuse_clashes(outputs: Iterable[Path], inputs: Iterable[Path]) -> None:
    """Refuse, before any work, an output that is also an input, a folder holding one (it would
    replace the user's scan) or a path inside an input folder (a replaced output would take the input
    with it, and a later run would read the output as data), or that two outputs share (one would
    replace the other). Paths are compared resolved, so links and ``./`` spellings do not hide a clash."""
    sources = {_identity(p): p for p in inputs}
    seen: dict[Path, Path] = {}
    for out in outputs:
        key = _identity(out)
        holding = next((p for src, p in sources.items() if key in src.parents), None)
        within = next((p for src, p in sources.items() if src in key.parents), None)
        if key in sources or holding is not None or within is not None:
            what = (
                f"the input {sources[key]}"
                if key in sources
                else f"the input {holding} or a folder holding it"
                if holding is not None
                else f"inside the input folder {within}"
            )
            raise OutputError(
                f"{out}: this output is {what}; writing it would destroy or mix with the input. Give the "
                "output a folder of its own."
            )
        if key in seen:
            raise OutputError(
                f"{out}: two outputs are both to be written here ({seen[key]} and {out}), so one would "
                "replace the other. Give each output its own name."
            )
        seen[key] = out


def _identity(path: Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, job schedulers) raised as an interrupt, so that every ``finally``
    runs: partial outputs are removed exactly as after Ctrl-C."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` instead of killing the process at once (which
    would leave hidden ``.partial`` files behind). Only the main thread can install the handler."""

    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` in one step.

    The temporary keeps the extension of ``path`` so that format-by-extension writers work. Missing
    parent folders are created. On any error the temporary is removed and ``path`` is untouched.
    Works for files and for folders (a checkpoint folder is written whole, then renamed).
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: its folder cannot be created ({exc.strerror}).") from None
    stem, ext = split_extension(path)
    tmp = path.with_name(f".{stem}.partial-{secrets.token_hex(4)}{ext}")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to the temporary file for {path}")
        _move_into_place(tmp, path, overwrite)
    except OSError as exc:  # read-only or full disk, lost permission: name the file, not a traceback
        raise OutputError(
            f"{path}: could not be written ({exc.strerror or exc}); nothing was written there. Free space "
            "or choose a folder you can write to."
        ) from exc
    finally:
        with contextlib.suppress(OSError):  # a failed cleanup must never hide the real error
            _remove(tmp)


@contextlib.contextmanager
def replacing_folder(path: str | os.PathLike, replace: bool) -> Iterator[Path]:
    """The folder to build an output folder in. To ``replace`` an existing ``path``: a hidden sibling
    that takes its place only when the block ends without error, so the old folder survives any
    failure, Ctrl-C included (nothing is swapped if nothing was written: torchrun's other ranks).
    Otherwise ``path`` itself (a new run, or one resumed in place). A file at ``path`` is refused.
    Whether ``path`` may be replaced at all is the caller's check (:func:`refuse_existing`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: this is a file, not a folder; give a folder name for the output.")
    if not (replace and path.exists()):
        yield path
        return
    staged = path.with_name(f".{path.name}.partial-{secrets.token_hex(4)}")
    try:
        yield staged
        if staged.exists():
            _move_into_place(staged, path, overwrite=True)
    finally:
        with contextlib.suppress(OSError):
            _remove(staged)


def _move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    if tmp.is_dir():
        if path.exists():
            refuse_existing(path, overwrite)
            backup = path.with_name(f".{path.name}.replaced-{secrets.token_hex(4)}")
            path.rename(backup)
            try:
                tmp.rename(path)
            except OSError:
                backup.rename(path)  # the old folder back where it was
                raise
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


def user_cache_dir(*parts: str) -> Path:
    """The user's cache folder for napari-disyre (``NAPARI_DISYRE_CACHE``, else the platform's:
    ``~/.cache/napari-disyre`` on Linux), with ``parts`` below it: where work that can be remade
    (benchmark runs, exported networks) goes, never beside the user's scans or in the package."""
    import platformdirs

    root = os.environ.get("NAPARI_DISYRE_CACHE") or platformdirs.user_cache_dir("napari-disyre")
    return Path(root).expanduser().joinpath(*parts)
