"""What a NIfTI header may claim, checked before its voxels are read.

A header is 348 bytes anyone can edit, and nibabel trusts much of it: a zero voxel size becomes 1 mm
in silence, a complex scan is read as its real part, and a 4 KB file claiming 1200 x 1200 x 1000
voxels allocates gigabytes before its truncation is noticed. Each claim is checked here against the
raw header (as written, before nibabel's repairs), the file's real size and the memory this machine
has, and refused with its reason; disagreeing qform and sform are a warning that names the one used.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError

#: Deflate's best ratio is about 1032:1 (long runs of one byte); a .nii.gz whose header claims more
#: voxel bytes than that times its size cannot hold them: the header is corrupt.
MAX_GZIP_RATIO = 1100
#: Reading converts to float32 beside the raw data: the peak is about this many bytes per voxel
#: beyond the raw ones.
FLOAT32_BYTES = 4
FIX = "Re-export the scan from its original data (dcm2niix for DICOM), or copy the file again."


class HeaderWarning(UserWarning):
    """The header is usable but says two things (a qform and an sform that disagree)."""


def check_header(image: nib.Nifti1Image, path: Path, what: str) -> None:
    """Refuse a header whose data type, voxel size or size cannot be true; warn on qform/sform disagreement."""
    _check_data_type(image, path, what)
    _check_voxel_sizes(path, image, what)
    _check_claimed_size(image, path, what)
    _warn_if_forms_disagree(image, path, what)


def _check_data_type(image: nib.Nifti1Image, path: Path, what: str) -> None:
    dtype = np.dtype(image.get_data_dtype())
    if dtype.names:
        raise InputError(
            f"{path}: the {what} holds colour (RGB/RGBA) voxels; an MRI scan has one intensity per voxel. "
            "Convert it to one grey-level channel first (it is probably a screenshot or a rendered export)."
        )
    if dtype.kind == "c":
        raise InputError(
            f"{path}: the {what} holds complex voxels ({dtype}); reading only their real part would give "
            "wrong intensities. Save the magnitude image (e.g. `fslcomplex -realabs`) and use that."
        )


def _check_voxel_sizes(path: Path, image: nib.Nifti1Image, what: str) -> None:
    """pixdim[1..3] as written (nibabel replaces a 0 by 1 mm when it reads the header), where the
    affine depends on them: no sform, so the qform or the bare pixdim places the voxels."""
    if int(image.header["sform_code"]) > 0:
        return  # the sform gives the voxel sizes; its own check is _check_affine's
    with nib.openers.ImageOpener(path) as handle:
        raw = type(image.header).from_fileobj(handle, check=False)
    ndim = min(3, max(1, int(raw["dim"][0])))
    sizes = np.asarray(raw["pixdim"][1 : 1 + ndim], dtype=np.float64)
    if not np.isfinite(sizes).all() or (sizes <= 0).any():
        raise InputError(
            f"{path}: the {what}'s header gives voxel sizes (pixdim) of {sizes.tolist()} mm; zero, negative or "
            f"non-finite sizes place no voxel in space. {FIX}"
        )


def _check_claimed_size(image: nib.Nifti1Image, path: Path, what: str) -> None:
    """The voxel bytes the header claims against the file's real size and the memory available,
    before a byte is allocated for them."""
    shape = tuple(int(n) for n in image.shape)
    raw_bytes = float(np.prod(shape, dtype=np.float64)) * np.dtype(image.get_data_dtype()).itemsize
    size = path.stat().st_size
    compressed = path.name.lower().endswith(".gz")
    offset = float(image.header["vox_offset"]) if not compressed else 0.0
    if (compressed and raw_bytes > size * MAX_GZIP_RATIO) or (not compressed and raw_bytes + offset > size):
        raise InputError(
            f"{path}: the header claims {'x'.join(map(str, shape))} voxels ({raw_bytes / 2**20:.0f} MB), which a "
            f"{size / 1024:.0f} KB file {'cannot compress to' if compressed else 'does not hold'}: the file is "
            f"truncated or its header corrupt. {FIX}"
        )
    needed = raw_bytes + float(np.prod(shape, dtype=np.float64)) * FLOAT32_BYTES
    budget = memory_budget_bytes()
    if budget is not None and needed > budget:
        raise InputError(
            f"{path}: reading this {what} ({'x'.join(map(str, shape))} voxels) needs about {needed / 2**30:.1f} GB "
            f"of memory, more than the {budget / 2**30:.1f} GB available. Crop or downsample it first, or free memory."
        )


def memory_budget_bytes() -> float | None:
    """The memory a volume may take: ``NAPARI_DISYRE_MEMORY_BUDGET`` (bytes) if set, else what the
    system reports available (``/proc/meminfo``'s MemAvailable; None where it cannot be told)."""
    if os.environ.get("NAPARI_DISYRE_MEMORY_BUDGET"):
        return float(os.environ["NAPARI_DISYRE_MEMORY_BUDGET"])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _warn_if_forms_disagree(image: nib.Nifti1Image, path: Path, what: str) -> None:
    header = image.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if qcode and scode and not np.allclose(qform, sform, atol=1e-3):
        warnings.warn(
            f"{path}: the {what}'s qform (code {int(qcode)}) and sform (code {int(scode)}) place the voxels "
            f"differently (translations {np.round(qform[:3, 3], 2).tolist()} and {np.round(sform[:3, 3], 2).tolist()} "
            "mm); the sform is used, as nibabel and FSL do, and outputs keep both as they are. Check the "
            "scan in a viewer if its position matters.",
            HeaderWarning,
            stacklevel=4,
        )
