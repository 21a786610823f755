"""Which volumes are label volumes (segmentations, lesion masks, gold standards), so that they open as
labels and can be compared with a mask, rather than as an image a user must convert by hand.

A NIfTI file does not say whether it holds intensities or labels (BraTS ``_seg`` files and the MS
``GOLD_STANDARD`` are often stored as floats), so this looks at two things: the file's name (``seg``,
``segmentation``, ``label``, ``mask``, ``GOLD_STANDARD`` as a word of it) and its values (integers,
none negative, few distinct ones). Integer values are needed either way: labels of a soft
probability map would lose its fractions.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .nifti import Volume

#: A word of the file name that says "labels": ``t1_seg``, ``BraTS19_2013_2_1_seg``, ``lesion-mask``,
#: ``GOLD_STANDARD``, ``aparc+aseg`` (``brainmask``, a skull-stripped scan in FreeSurfer, is no such word).
LABEL_NAME = re.compile(
    r"(?<![a-z])(segmentation|seg|aseg|labels?|masks?|gold[_-]?standard)(?![a-z])", re.IGNORECASE
)
#: Integer volumes with at most this many distinct values are labels whatever their name: a lesion
#: mask has 2, BraTS 4, FreeSurfer's aseg about 45; an integer-valued MRI scan has hundreds or more.
MAX_LABEL_VALUES = 64
SAMPLE_VOXELS = 100_000


def is_label_name(path: str | Path) -> bool:
    """Whether the file's name says it holds labels."""
    return bool(LABEL_NAME.search(Path(path).name))


def as_labels(volume: Volume) -> np.ndarray | None:
    """``volume``'s voxels as integer labels (the smallest unsigned type that holds them) when it is a
    label volume, else None (an image: intensities, or a map with fractions or negative values)."""
    data = np.asarray(volume.data)
    named = volume.path is not None and is_label_name(volume.path)
    # a strided sample first: most scans are told from it, without a pass over every voxel
    sample = data.ravel()[:: max(1, data.size // SAMPLE_VOXELS)]
    if not _whole_and_not_negative(sample) or (not named and len(np.unique(sample)) > MAX_LABEL_VALUES):
        return None
    if not _whole_and_not_negative(data):
        return None
    highest = int(data.max())
    if not named and _distinct_values(data, highest) > MAX_LABEL_VALUES:
        return None
    return data.astype(np.min_scalar_type(highest))


def _whole_and_not_negative(values: np.ndarray) -> bool:
    return values.size > 0 and values.min() >= 0 and np.array_equal(values, np.round(values))


def _distinct_values(data: np.ndarray, highest: int) -> int:
    """How many different values the non-negative integer-valued ``data`` holds."""
    if highest < 2**20:  # counting is linear; sorting (np.unique) is not
        return int(np.count_nonzero(np.bincount(data.ravel().astype(np.int64), minlength=1)))
    return len(np.unique(data))
