"""Resuming a run only as the run it continues: same data, same settings.

``training/config.json`` records the run's settings and the files it trains on. A resume whose data,
batch, crop, seed, preset or network differ would silently train a different model under the old
one's provenance, so it is refused. A few changes are legitimate (more steps, another device or
precision): they are allowed with a warning and recorded, with both values, in ``resumes``.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..outputs import write_json
from .config import TrainingConfig
from .dataset import TrainingScan
from .state import CONFIG_FILE, STATE_DIR

#: Settings that change neither the batches nor the arithmetic: a resume may change them silently.
FREE = frozenset(
    {"validate_every", "save_every", "log_every", "workers", "description", "command", "finished"}
)
#: Settings a resume may change, with a warning and a record of both values.
RECORDED = frozenset({"steps", "device", "precision"})


def run_record(
    config: TrainingConfig, scans: Sequence[TrainingScan], validation: Sequence[TrainingScan]
) -> dict:
    """What ``training/config.json`` holds: the resolved settings, the command and every data file."""
    return json.loads(
        json.dumps(
            {**config.to_dict(), "command": " ".join(sys.argv), "data": data_record(scans, validation)},
            default=str,
        )
    )  # as it reads back from disk


def data_record(scans: Sequence[TrainingScan], validation: Sequence[TrainingScan]) -> dict[str, list]:
    """Each scan (and its mask and exclusion label) by absolute path and size in bytes."""

    def files(scan: TrainingScan) -> list:
        paths = (scan.path, scan.brain_mask, scan.exclude_label)
        return [None if p is None else [str(Path(p).absolute()), Path(p).stat().st_size] for p in paths]

    return {"training": [files(s) for s in scans], "validation": [files(s) for s in validation]}


def check_resume(path: Path, record: dict, config: TrainingConfig) -> tuple[TrainingConfig, dict]:
    """Compare this resume's ``record`` with the interrupted run's (``path``); refuse what differs
    outside :data:`FREE` and :data:`RECORDED`. Returns the config to continue with (its warm-up kept
    from the first session) and the record to save, whose ``resumes`` lists every recorded change."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: the interrupted run's settings cannot be read ({exc}).") from None
    history = previous.pop("resumes", [])
    previous.setdefault("data", record["data"])  # runs started before the data was recorded
    if config.warmup_steps != previous.get("warmup_steps") and config.steps != previous.get("steps"):
        config = TrainingConfig.from_dict({**config.to_dict(), "warmup_steps": previous.get("warmup_steps")})
        record = {**record, "warmup_steps": config.warmup_steps}  # derived from steps: keep the first one's
    differ = sorted(k for k in record.keys() | previous.keys() if record.get(k) != previous.get(k))
    refused = [k for k in differ if k not in FREE | RECORDED]
    if refused:
        details = "; ".join(_difference(k, previous.get(k), record.get(k)) for k in refused)
        raise InputError(
            f"{path.parent.parent}: --resume continues the interrupted run with its own settings and data, "
            f"but these differ: {details}. Resume with the same ones, or start a new run in another --out "
            "(--init CKPT fine-tunes this model on other data)."
        )
    changes = {k: [previous.get(k), record.get(k)] for k in differ if k in RECORDED}
    if changes:
        warnings.warn(
            "resuming with "
            + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())
            + " (recorded in the checkpoint's provenance)",
            stacklevel=2,
        )
        history = [*history, {"command": record.get("command"), "changed": changes}]
    return config, {**record, "resumes": history}


def save_record(output: Path, record: dict) -> None:
    """Write ``training/config.json`` (at the start of each session, and marked finished at the end)."""
    (output / STATE_DIR).mkdir(parents=True, exist_ok=True)
    write_json(output / STATE_DIR / CONFIG_FILE, record)


def _difference(key: str, old: Any, new: Any) -> str:
    if key != "data":
        return f"{key} {old!r} -> {new!r}"
    parts = []
    for kind in ("training", "validation"):
        before, now = {json.dumps(f) for f in old.get(kind, [])}, {json.dumps(f) for f in new.get(kind, [])}
        if before != now:
            example = json.loads(sorted(now - before or before - now)[0])[0][0]
            parts.append(
                f"{kind} files ({len(now - before)} new or changed, {len(before - now)} gone, e.g. {example})"
            )
    return "data: " + ", ".join(parts or ["order of the files"])
