"""Saved anomaly maps that can be trusted on reuse: each map has a JSON record beside it of what made
it (scan and brain mask content, checkpoint fingerprint, restoration settings, options that change the
numbers), and a map is reused only when its record matches the run that asks for it. Keying by case
id alone once scored one model's maps under another's name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from ..checkpoint_files import read_json_object
from ..errors import InputError
from ..scans.contrasts import MultiContrastScan
from ..scans.nifti import Volume, strip_nifti_extension


def map_record(
    scan: Volume | MultiContrastScan, mask: np.ndarray | None, checkpoint, settings, options: dict
) -> dict:
    """Everything that determines a DISYRE map: the content of the scan (of every contrast) and brain
    mask, and (with a checkpoint) the model's fingerprint, the restoration settings and the options
    that change numbers (precision as resolved on this device, cropping, any post-processing); not the
    batch size nor the runtime (torch or ONNX Runtime), which change a map only by float rounding."""
    record = {
        "scan": (
            _digest(*scan.channels, scan.reference.affine)
            if isinstance(scan, MultiContrastScan)
            else _digest(scan.data, scan.affine)
        ),
        "brain_mask": None if mask is None else _digest(mask > 0),
    }
    if checkpoint is not None:
        from ..runtime.devices import autocast_dtype, resolve_device

        kept = {k: v for k, v in options.items() if k not in ("batch_size", "device", "runtime")}
        precision = autocast_dtype(resolve_device(options.get("device", "auto")), options.get("precision"))
        kept["precision"] = str(precision or "float32")
        # Bernoulli diffusion settings leave the official map's reference out (InferenceSettings.record)
        written = settings.record() if hasattr(settings, "record") else dataclasses.asdict(settings)
        record |= {
            "checkpoint": checkpoint.fingerprint(),
            "settings": written,
            "options": kept,
        }
    return json.loads(json.dumps(record, sort_keys=True, default=str))  # as it reads back from disk


def check_saved_map(saved: Path, expected: dict) -> None:
    """Reuse a saved map only when its record matches ``expected`` in every entry that was asked for;
    without a checkpoint only the scan (and brain mask) are compared, with one everything is."""
    path = record_path(saved)
    fix = f"Use another --maps folder, or delete {saved.name} (and {path.name}) to recompute it."
    if not path.exists():
        if "checkpoint" not in expected:
            return  # maps given without a model: the user vouches for them
        raise InputError(
            f"{saved}: saved map without a record of the model, settings and scan that made it, so it "
            f"cannot be reused safely. {fix}"
        )
    try:
        record = read_json_object(path, "record of a saved map", error=InputError)
    except InputError as exc:
        raise InputError(f"{exc} {fix}") from None
    differ = [k for k in expected if record.get(k) != expected[k]]
    if differ:
        raise InputError(
            f"{saved}: this saved map was made with another {', '.join(differ)} than this evaluation's "
            f"(a different checkpoint, settings or scan with the same case id), so it would score the "
            f"wrong map. {fix}"
        )


def record_path(saved: Path) -> Path:
    return saved.with_name(strip_nifti_extension(saved.name) + ".json")


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]
