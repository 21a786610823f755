"""The ``training/`` folder of a run: the resumable state, the CSV log and the recorded config.

A run writes ``training/state.pt`` (weights, optimiser, learning-rate schedule, EMA, step, wall time)
every ``save_every`` steps and on Ctrl-C, atomically, so that ``resume=True`` continues exactly where
it stopped; the state is read back with ``weights_only=True`` (no code is unpickled).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import DisyreError, OutputError, OutputExistsError
from ..outputs import atomic_output, refuse_clashes, refuse_existing
from ..validation import BerDiffStateFields, DisyreStateFields, check

STATE_DIR = "training"
STATE_FILE = "state.pt"
LOG_FILE = "log.csv"
CONFIG_FILE = "config.json"
LOG_FIELDS = ("step", "loss", "lr", "val_loss", "elapsed_s", "examples_per_s")


def check_output(
    output: Path, resume: bool, overwrite: bool, steps_option: str = "--steps", inputs: Sequence[Path] = ()
) -> None:
    """Refuse to resume without a state, and to train into an existing folder unless ``overwrite``;
    a folder an interrupted run left says how to continue it (a finished one: with more
    ``steps_option``, the method's own flag). ``inputs`` (scans, their folders, a starting
    checkpoint) may not be the output, inside it or hold it. Nothing is deleted here: a replaced
    folder is swapped out only when its replacement is complete (:func:`replacing_folder`)."""
    refuse_clashes([output], inputs)
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output}: this is a file, not a folder; give a folder name for the model.")
    if resume:
        if not (output / STATE_DIR / STATE_FILE).exists():
            raise DisyreError(
                f"{output}: nothing to resume (no {STATE_DIR}/{STATE_FILE}); start without --resume."
            )
        return
    if (output / STATE_DIR / STATE_FILE).exists() and not overwrite:
        raise OutputExistsError(
            f"{output}: a finished training run: train it further with --resume and more {steps_option}, or start "
            "again with --overwrite."
            if _finished(output)
            else f"{output}: an interrupted training run: continue it with --resume (or start again with "
            "--overwrite)."
        )
    refuse_existing(output, overwrite)


def training_inputs(scans: Sequence, *folders: Path | str | None) -> list[Path]:
    """What a run reads and its output may not touch: every scan, mask and label, their folders, and
    ``folders`` (the training folder, a starting checkpoint)."""
    files = [p for s in scans for p in (s.path, s.brain_mask, s.exclude_label, *(c[1] for c in s.contrasts)) if p]
    return [*files, *{Path(p).parent for p in files}, *(Path(f) for f in folders if f)]


def _finished(output: Path) -> bool:
    try:
        return bool(json.loads((output / STATE_DIR / CONFIG_FILE).read_text()).get("finished"))
    except (OSError, ValueError, AttributeError):
        return False


def save_state(output: Path, step: int, elapsed: float, unet, optimizer, lr_schedule, ema) -> None:
    """``elapsed`` (seconds since the run first started) lets a resumed run report its whole wall time."""
    state = {
        "step": step,
        "elapsed_s": elapsed,
        "unet": unet.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_schedule": lr_schedule.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
    }
    write_state(output, state)


def write_state(output: Path, state: dict) -> None:
    """``training/state.pt`` of the run in ``output``, replaced atomically (tensors and plain values only)."""
    import torch

    path = output / STATE_DIR / STATE_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, overwrite=True) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError of its writer
        raise OutputError(
            f"{path}: the training state could not be saved ({exc}); the previous state, if any, is kept. "
            "Free disk space, then continue with --resume."
        ) from None


def read_state(path: Path, method: str = "disyre") -> dict:
    """A state written by :func:`write_state`, read with ``weights_only=True``, checked to be one of
    ``method``'s runs (Bernoulli diffusion states carry ``stage_name``)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DisyreError(
            f"{path}: the training state cannot be read ({exc}); start a new run instead."
        ) from exc
    if not isinstance(state, dict):
        raise DisyreError(
            f"{path}: not a training state (it holds a {type(state).__name__}); start a new run without --resume."
        )
    found = "berdiff" if "stage_name" in state else "disyre"
    if found != method:
        raise DisyreError(f"{path}: the state of a --method {found} run; resume it with --method {found}.")
    fields = DisyreStateFields if method == "disyre" else BerDiffStateFields
    check(fields, state, f"{path}: not a training state of napari-disyre")
    return state


def load_state(state: dict, path: Path, unet, optimizer, lr_schedule, ema) -> tuple[int, float]:
    """Restore everything in place from ``state`` (read from ``path`` by :func:`read_state`); returns
    the step reached and the wall time spent so far."""
    unet.load_state_dict(state["unet"])
    optimizer.load_state_dict(state["optimizer"])
    lr_schedule.load_state_dict(state["lr_schedule"])
    if ema is not None:
        if state.get("ema") is None:
            raise DisyreError(f"{path}: this run was trained without EMA; resume without --ema.")
        ema.load_state_dict(state["ema"])
    return int(state["step"]), float(state.get("elapsed_s", 0.0))


class TrainingLog:
    """The CSV training log; a resumed run appends to it."""

    def __init__(self, path: Path, *, enabled: bool, resume: bool):
        self.handle = None
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        append = resume and path.exists()
        self.handle = path.open("a" if append else "w", newline="")
        self.writer = csv.writer(self.handle)
        if not append:
            self.writer.writerow(LOG_FIELDS)

    def write(
        self, step: int, loss: float, lr: float, val_loss: float | None, elapsed: float, rate: float
    ) -> None:
        if self.handle is None:
            return
        row = [step, f"{loss:.6f}", f"{lr:.3e}", "" if val_loss is None else f"{val_loss:.6f}", f"{elapsed:.1f}",
               f"{rate:.1f}"]  # fmt: skip
        try:
            self.writer.writerow(row)
            self.handle.flush()
        except OSError as exc:  # a full disk: say so, not a traceback
            raise OutputError(f"{self.handle.name}: the training log could not be written ({exc.strerror}).") from None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
