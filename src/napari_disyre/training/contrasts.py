"""Which MRI contrast a file holds, read from its name (BIDS suffixes and the usual tokens).

A model learns one contrast: T1 and T2 scans of the same brain look like each other's anomalies.
Mixing contrasts in a training set is almost always a mistake (a wrong glob, a BIDS folder with
several suffixes), so training refuses it unless told otherwise. Intensity histograms cannot settle
this reliably across scanners (two T1 cohorts can differ more than a T1 and a FLAIR), so the file
names, which BIDS and BraTS make explicit, are what is checked.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError
from ..scans.nifti import strip_nifti_extension

_TOKENS: dict[str, str] = {
    **dict.fromkeys(("t1w", "t1", "mprage", "t1mprage", "spgr", "bravo"), "T1"),
    **dict.fromkeys(("t1c", "t1ce", "t1gd", "t1post", "t1contrast", "ce-t1w"), "T1c"),
    **dict.fromkeys(("t2w", "t2"), "T2"),
    **dict.fromkeys(("flair", "t2flair", "t2-flair"), "FLAIR"),
    **dict.fromkeys(("pd", "pdw"), "PD"),
    **dict.fromkeys(("t2star", "t2starw", "swi"), "T2*"),
}


def contrast_from_name(path: str | Path) -> str | None:
    """The contrast named in a file name (``sub-01_T1w.nii.gz`` -> ``"T1"``), or None if none is."""
    stem = strip_nifti_extension(Path(path).name).lower()
    found = None
    enhanced = False
    for token in re.split(r"[_.\s]+", stem):
        enhanced |= token.startswith("ce-")  # BIDS contrast-enhancement entity, e.g. ce-gd
        for candidate in (token, *token.split("-")):
            found = _TOKENS.get(candidate, found)
    return "T1c" if found == "T1" and enhanced else found


def check_same_contrast(paths: Iterable[Path]) -> str | None:
    """The one contrast the files' names agree on (None if no name tells); an error if they differ."""
    groups: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        contrast = contrast_from_name(path)
        if contrast is not None:
            groups[contrast].append(str(path))
    if len(groups) > 1:
        listing = "; ".join(
            f"{c}: {len(files)} file(s), e.g. {files[0]}" for c, files in sorted(groups.items())
        )
        raise InputError(
            f"the training scans are of different contrasts ({listing}). A model learns one contrast: "
            "select the files of one (e.g. --pattern '**/*_T1w.nii.gz'), or pass --allow-mixed-contrasts "
            "if the names are misleading."
        )
    return next(iter(groups), None)
