"""Random corruptions of a valid NIfTI fed to the loader: every outcome must be a usable volume or a
DisyreError, never another exception (a traceback) and never a volume that breaks what follows.

A seeded loop (hypothesis is not a dependency): truncations, bytes overwritten in the header, header
fields set to hostile values, other data types and hostile affines, both as .nii and .nii.gz.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from napari_disyre.errors import DisyreError
from napari_disyre.scans.nifti import Volume, load_scan

from .conftest import synthetic_brain

#: Header fields (offset, numpy type) worth breaking: dim, intent, datatype, bitpix, pixdim,
#: vox_offset, scl_slope/inter, qform/sform codes, quaternion and offsets, srow_x/y/z, magic.
FIELDS = [(40, "<i2", 8), (68, "<i2", 1), (70, "<i2", 1), (72, "<i2", 1), (76, "<f4", 8), (108, "<f4", 1),
          (112, "<f4", 2), (252, "<i2", 2), (256, "<f4", 6), (280, "<f4", 12), (344, "S4", 1)]  # fmt: skip
HOSTILE = [0, -1, 1, 2, 7, 255, 32767, -32768, np.nan, np.inf, -np.inf, 1e30, 1e-30]
N_CASES = 160


def valid_nifti() -> bytes:
    data, _ = synthetic_brain(shape=(12, 14, 6))
    affine = np.diag([1.2, 0.9, 3.0, 1.0])
    affine[:3, 3] = [-5, 3, 8]
    image = nib.Nifti1Image(data, affine)
    return image.header.binaryblock + b"\0" * 4 + data.astype(np.float32).tobytes(order="F")


def corrupt(raw: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    raw = bytearray(raw)
    kind = rng.choice(["truncate", "bytes", "field", "dtype", "affine"])
    if kind == "truncate":
        raw = raw[: int(rng.integers(0, len(raw)))]
    elif kind == "bytes":
        for _ in range(int(rng.integers(1, 20))):
            raw[int(rng.integers(0, 352))] = int(rng.integers(0, 256))
    elif kind == "field":
        offset, dtype, count = FIELDS[int(rng.integers(len(FIELDS)))]
        if dtype == "S4":
            raw[offset : offset + 4] = bytes(rng.integers(0, 256, 4).astype(np.uint8))
        else:
            i = int(rng.integers(count))
            value = np.array(HOSTILE[int(rng.integers(len(HOSTILE)))])
            with np.errstate(invalid="ignore", over="ignore"):
                raw[offset + i * np.dtype(dtype).itemsize : offset + (i + 1) * np.dtype(dtype).itemsize] = (
                    value.astype(dtype).tobytes()
                )
    elif kind == "dtype":  # another datatype code with its bitpix, data left as it is
        code, bits = [(2, 8), (4, 16), (8, 32), (16, 32), (64, 64), (32, 64), (128, 24), (256, 8), (1, 1)][
            int(rng.integers(9))
        ]
        raw[70:74] = np.array([code, bits], "<i2").tobytes()
    else:  # sform with random, possibly singular or non-finite rows
        rows = rng.choice([0.0, 1.0, -2.5, 1e-9, np.nan, 1e20], size=12)
        raw[254:256] = np.array([2], "<i2").tobytes()
        raw[280:328] = rows.astype("<f4").tobytes()
    return kind, bytes(raw)


@pytest.mark.parametrize("compressed", [False, True])
def test_random_corruptions_give_a_volume_or_a_disyre_error(tmp_path, compressed):
    rng = np.random.default_rng(20261128 + compressed)
    raw = valid_nifti()
    outcomes = {"volume": 0, "refused": 0}
    for n in range(N_CASES // 2):
        kind, bad = corrupt(raw, rng)
        path = tmp_path / f"case{n}.nii{'.gz' if compressed else ''}"
        path.write_bytes(gzip.compress(bad, mtime=0) if compressed else bad)
        try:
            volume = load_scan(path)
        except DisyreError as exc:
            assert str(path) in str(exc), (kind, str(exc))
            outcomes["refused"] += 1
            continue
        except Exception as exc:  # pragma: no cover - the failure message names the corruption
            pytest.fail(f"case {n} ({kind}): {type(exc).__name__} escaped the loader: {exc}")
        check_usable(volume)
        outcomes["volume"] += 1
    assert outcomes["volume"] > 0 and outcomes["refused"] > 0, outcomes  # both kinds were exercised


def check_usable(volume: Volume) -> None:
    """What the rest of the pipeline relies on from a loaded scan."""
    assert volume.data.ndim == 3 and min(volume.shape) >= 2 and volume.data.dtype == np.float32
    assert np.isfinite(volume.data).all() and np.isfinite(volume.affine).all()
    assert min(volume.spacing) > 0 and abs(np.linalg.det(volume.affine[:3, :3])) > 0
    assert len(volume.axcodes) == 3
