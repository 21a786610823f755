"""The checkpoint the widget holds between runs, reloaded when its files change on disk.

Loading a checkpoint costs seconds (torch, diffusers, the weights), so the widget keeps the last one.
Keyed by the path alone, a model retrained into the same folder would be served stale; keyed by the
files' inode, size and modification time, it is not. Qt-free, so it is tested without a viewer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..berdiff.layout import AE_WEIGHTS, UNET_WEIGHTS
from ..berdiff.layout import METADATA_FILE as BERDIFF_METADATA
from ..checkpoint_files import checkpoint_path
from ..disyre.checkpoint import METADATA_FILE, WEIGHTS_BIN, WEIGHTS_SAFETENSORS, Checkpoint
from .detectors import load_checkpoint

if TYPE_CHECKING:
    from ..berdiff.checkpoint import BerDiffModel


class CheckpointCache:
    """The last loaded checkpoint, reloaded when its path or any of its files changed on disk.

    One model is held (a second would double the memory for a rarely used comparison); a retrain into
    the same folder replaces the files atomically, which changes their inode and modification time,
    so stale weights are never served.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._checkpoint: Checkpoint | BerDiffModel | None = None

    def get(self, path: str | Path) -> Checkpoint | BerDiffModel:
        key = _fingerprint(checkpoint_path(path))
        if self._checkpoint is None or key != self._key:
            self._checkpoint, self._key = None, None  # free the old model before loading the new one
            self._checkpoint, self._key = load_checkpoint(path), key
        return self._checkpoint


def _fingerprint(path: Path) -> tuple[Any, ...]:
    """Path, inode, size and modification time of every file that loading reads."""
    files = (
        [path]
        if path.is_file()
        else [
            path / METADATA_FILE,
            path / "scheduler" / "scheduler_config.json",
            path / "unet" / "config.json",
            path / "unet" / WEIGHTS_SAFETENSORS,
            path / "unet" / WEIGHTS_BIN,
            *(path / name for name in (BERDIFF_METADATA, AE_WEIGHTS, UNET_WEIGHTS)),
        ]
    )
    stats = []
    for file in files:
        if file.exists():
            st = file.stat()
            stats.append((str(file), st.st_ino, st.st_size, st.st_mtime_ns))
    return (str(path.resolve()), *stats)
