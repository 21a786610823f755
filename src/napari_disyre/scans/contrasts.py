"""Several co-registered contrasts of one patient (FLAIR, T1, T1ce, T2) as one input.

A model of C channels takes one scan per channel, in the order its checkpoint names them. The scans
must lie on one voxel grid (same shape, same affine within :data:`AFFINE_TOLERANCE` mm), because the
network sees them voxel for voxel; a pair that does not is refused naming both files. Outputs land on
that shared grid (the first contrast's header and affine).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .nifti import Volume, check_scan, load_scan

#: How far two affines may differ (mm, per entry) and still be the same grid (as for brain masks).
AFFINE_TOLERANCE = 1e-3


@dataclass
class MultiContrastScan:
    """Named co-registered volumes, in channel order (``{"flair": Volume, "t2": Volume}``)."""

    volumes: dict[str, Volume]

    def __post_init__(self) -> None:
        if not self.volumes:
            raise InputError("no scan given: a multi-contrast input needs one scan per contrast.")
        first_name, first = next(iter(self.volumes.items()))
        for name, volume in self.volumes.items():
            check_same_grid(first, first_name, volume, name)

    @property
    def contrasts(self) -> tuple[str, ...]:
        return tuple(self.volumes)

    @property
    def reference(self) -> Volume:
        """The first contrast: its grid, affine and header are the outputs'."""
        return next(iter(self.volumes.values()))

    @property
    def channels(self) -> list[np.ndarray]:
        return [v.data for v in self.volumes.values()]

    def in_order(self, contrasts: Sequence[str]) -> MultiContrastScan:
        """The same scans in a checkpoint's channel order (names match case-insensitively); a missing
        or extra contrast is refused, since the network would be fed the wrong images."""
        by_name = {name.lower(): (name, v) for name, v in self.volumes.items()}
        wanted = [c.lower() for c in contrasts]
        missing = [c for c in contrasts if c.lower() not in by_name]
        extra = [name for key, (name, _) in by_name.items() if key not in wanted]
        if missing or extra:
            raise InputError(
                f"this model takes the contrasts {', '.join(contrasts)} (one scan each); "
                + (f"missing: {', '.join(missing)}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"not used by the model: {', '.join(extra)}" if extra else "")
                + ". Give one scan per contrast, e.g. "
                + " ".join(f"--scan {c}=PATH" for c in contrasts)
                + "."
            )
        return MultiContrastScan({c: by_name[c.lower()][1] for c in contrasts})


def check_same_grid(first: Volume, first_name: str, other: Volume, other_name: str) -> None:
    """Refuse two contrasts that are not on one voxel grid, naming both files and what to do."""
    where = f"{other.path or other_name} ({other_name}) and {first.path or first_name} ({first_name})"
    if other.shape != first.shape:
        raise InputError(
            f"{where} have different shapes, {other.shape} and {first.shape}: the contrasts of one input "
            "must be co-registered on one voxel grid. Register and resample them to one contrast first "
            "(e.g. ANTs, FSL flirt -applyxfm)."
        )
    if not np.allclose(other.affine, first.affine, atol=AFFINE_TOLERANCE):
        raise InputError(
            f"{where} have different affines, so their voxels do not line up:\n"
            f"{np.round(other.affine, 3)}\nand\n{np.round(first.affine, 3)}\n"
            "Register and resample them onto one contrast's grid first."
        )


def load_contrasts(paths: Mapping[str, str | Path]) -> MultiContrastScan:
    """Read one scan per contrast (``{"flair": "a.nii.gz", "t2": "b.nii.gz"}``), grids checked."""
    return MultiContrastScan({name: load_scan(path) for name, path in paths.items()})


def as_channels(scan: Volume | MultiContrastScan) -> MultiContrastScan:
    """Any detection input as named channels: a single Volume is one channel named "scan"."""
    if isinstance(scan, MultiContrastScan):
        for volume in scan.volumes.values():
            check_scan(volume)
        return scan
    return MultiContrastScan({"scan": check_scan(scan)})


def find_contrast_cases(root: Path, patterns: Mapping[str, str]) -> dict[str, dict[str, Path]]:
    """Cases of a cohort folder by a file-name pattern per contrast (``{"flair": "*_flair.nii.gz"}``),
    searched in ``root`` and its sub-folders: files whose ``*`` part and folder agree are one case
    (``P1/P1_flair.nii.gz`` and ``P1/P1_t2.nii.gz``), named by that part (or by the folder when the
    pattern has no ``*``). A case lacking a contrast is refused, listing them: silently dropping it
    would change a cohort's results."""
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give the cohort folder holding the scans.")
    found: dict[tuple[Path, str], dict[str, Path]] = {}
    for contrast, pattern in patterns.items():
        if pattern.count("*") > 1 or "/" in pattern:
            raise InputError(f"{contrast}={pattern}: a file-name pattern has at most one '*' and no folder.")
        prefix, _, suffix = pattern.partition("*")
        for path in sorted(root.rglob(pattern)):
            key = path.name[len(prefix) : len(path.name) - len(suffix)] if "*" in pattern else ""
            found.setdefault((path.parent, key), {})[contrast] = path
    if not found:
        raise InputError(f"{root}: no file matches {', '.join(patterns.values())}.")
    incomplete = [
        f"{folder / key} (has {', '.join(c)})" for (folder, key), c in found.items() if len(c) < len(patterns)
    ]
    if incomplete:
        raise InputError(
            f"{len(incomplete)} case(s) in {root} lack a contrast of {', '.join(patterns)}: "
            + "; ".join(incomplete[:5])
            + ". Give every case one scan per contrast, or fix the name patterns."
        )
    cases = {}
    for (folder, key), files in found.items():
        name = key.strip("_-. ") or folder.name
        if name in cases:
            raise InputError(
                f"{root}: two cases would both be named {name!r}; make the name patterns tell them apart."
            )
        cases[name] = {c: files[c] for c in patterns}
    return cases
