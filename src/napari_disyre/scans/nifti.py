"""NIfTI in and out: a scan with its affine and header, and outputs that land on the scan's exact grid.

Outputs copy the input's header (units, qform/sform codes, intent-free), take the input's affine and
change only the data type, so that ITK-SNAP, 3D Slicer and FSLeyes overlay them on the scan voxel for
voxel. Every problem with an input file becomes an :class:`~napari_disyre.errors.InputError` that
names the file and says what to do.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

from ..errors import InputError
from ..outputs import atomic_output
from ..validation import VolumeFields, check
from .headers import check_header

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
OutputKind = Literal["map", "mask", "image"]
_OUTPUT_DTYPES: dict[str, type] = {"map": np.float32, "mask": np.uint8, "image": np.float32}
_DESCRIPTIONS = {
    "map": b"napari-disyre anomaly map",
    "mask": b"napari-disyre anomaly mask",
    "image": b"napari-disyre restoration",
}


@dataclass
class Volume:
    """A 3D scan: float32 voxels, the voxel-to-world affine and the header it came with."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | nib.Nifti2Header | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        """A list for ``data``, ``affine=None``, complex or RGB voxels: refused here, with the reason."""
        check(VolumeFields, {"data": self.data, "affine": self.affine}, str(self.path or "Volume"), error=InputError)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (from the affine, so oblique scans are right too)."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def axcodes(self) -> str:
        """Closest anatomical orientation of the array axes, e.g. ``"RAS"`` or ``"LPS"``."""
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def name(self) -> str:
        """File name without the NIfTI extension, for output names and layer names."""
        if self.path is None:
            return "scan"
        return strip_nifti_extension(self.path.name)


def strip_nifti_extension(name: str) -> str:
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def is_nifti_path(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_EXTENSIONS)


def load_volume(path: str | Path, *, what: str = "scan") -> Volume:
    """Read a 3D NIfTI volume (or 4D with a single frame) as float32, refusing unusable data.

    ``what`` names the role of the file in error messages ("scan", "brain mask", "label").
    """
    path = Path(path)
    image = _open_nifti(path, what)
    _check_shape(image, path, what)
    check_header(image, path, what)
    affine = _check_affine(_read_affine(image, path, what), path, what)
    data = _read_data(image, path, what)
    data = _as_3d(data, path, what)
    _check_finite(data, path, what)
    return Volume(data=data, affine=affine, header=image.header, path=path)


def load_scan(path: str | Path) -> Volume:
    """A scan to detect anomalies in: like :func:`load_volume`, and it must not be empty."""
    return check_scan(load_volume(path, what="scan"))


def check_scan(volume: Volume) -> Volume:
    """The checks :func:`load_scan` makes, for a :class:`Volume` built in memory (library, napari layer):
    3D, finite, a usable affine and not constant. Detection runs them on every scan it is given."""
    where = volume.path or "the scan"
    data = np.asarray(volume.data)
    if data.ndim != 3:
        _as_3d(data, where, "scan")  # raises the message for 2D, 4D or 5D data
    _check_finite(data, where, "scan")
    _check_affine(volume.affine, where, "scan")
    if not np.any(data != data.flat[0]):
        raise InputError(
            f"{where}: every voxel of this scan has the value {data.flat[0]:g}, so there is no "
            "brain to analyse. Check that this is the right file (not an empty mask or a blank export).",
            title="Scan is blank",
        )
    return volume


def load_matching(path: str | Path, like: Volume, *, what: str) -> np.ndarray:
    """Read a mask or label volume that must lie on the same voxel grid as ``like``."""
    other = load_volume(path, what=what)
    if other.shape != like.shape:
        raise InputError(
            f"{path}: this {what} has shape {other.shape} but the scan {like.path or ''} has shape "
            f"{like.shape}. They must be on the same voxel grid; resample the {what} to the scan first."
        )
    if not np.allclose(other.affine, like.affine, atol=1e-3):
        raise InputError(
            f"{path}: this {what}'s affine differs from the scan's ({like.path or 'scan'}), so its voxels "
            f"would not line up.\n{what} affine:\n{np.round(other.affine, 3)}\nscan affine:\n"
            f"{np.round(like.affine, 3)}\nResample the {what} onto the scan's grid first."
        )
    return other.data


def save_volume(
    path: str | Path,
    data: np.ndarray,
    like: Volume,
    *,
    kind: OutputKind = "map",
    overwrite: bool = False,
) -> Path:
    """Write ``data`` on ``like``'s grid: same affine, header copied, float32 map or uint8 mask.

    Written atomically; an existing file is kept unless ``overwrite`` is true.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise InputError(
            f"{path}: output names must end in .nii or .nii.gz.", title="Output must be .nii or .nii.gz"
        )
    if tuple(data.shape) != like.shape:
        raise ValueError(f"data of shape {data.shape} does not match the scan's grid {like.shape}")
    dtype = _OUTPUT_DTYPES[kind]
    image = nifti_like(np.asarray(data).astype(dtype, copy=False), like, kind)
    with atomic_output(path, overwrite=overwrite) as tmp:
        nib.save(image, tmp)
    return path


def save_stack(path: str | Path, stack: np.ndarray, like: Volume, *, overwrite: bool = False) -> Path:
    """Write a stack of volumes on ``like``'s grid, steps first ``(S, *grid)``, as one 4D float32
    NIfTI ``(*grid, S)`` (the restorations, the map after each step). Atomic; no clobber unless
    ``overwrite``."""
    path = Path(path)
    if not is_nifti_path(path):
        raise InputError(
            f"{path}: output names must end in .nii or .nii.gz.", title="Output must be .nii or .nii.gz"
        )
    stack = np.asarray(stack)
    if stack.ndim != 4 or tuple(stack.shape[1:]) != like.shape:
        raise ValueError(f"a stack of shape {stack.shape} does not match the scan's grid {like.shape}")
    image = nifti_like(np.moveaxis(stack, 0, -1).astype(np.float32), like, kind="image")
    with atomic_output(path, overwrite=overwrite) as tmp:
        nib.save(image, tmp)
    return path


def nifti_like(data: np.ndarray, like: Volume, kind: OutputKind) -> nib.Nifti1Image:
    """A NIfTI image of ``data`` with ``like``'s affine and a copy of its header, retyped for ``kind``."""
    header_class = type(like.header) if like.header is not None else nib.Nifti1Header
    image_class = nib.Nifti2Image if header_class is nib.Nifti2Header else nib.Nifti1Image
    header = like.header.copy() if like.header is not None else None
    image = image_class(data, like.affine, header=header)
    header = image.header
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(1.0, 0.0)
    header.set_intent("none")
    header["descrip"] = _DESCRIPTIONS[kind]
    finite = data[np.isfinite(data)] if data.size else data
    header["cal_min"] = float(finite.min()) if finite.size else 0.0
    header["cal_max"] = float(finite.max()) if finite.size else 0.0
    if like.header is not None:
        # Keep the input's qform and sform as they are, codes included (scanner vs aligned space): a
        # viewer that prefers the other form than nibabel then still overlays the output on the scan.
        qform, qcode = like.header.get_qform(coded=True)
        sform, scode = like.header.get_sform(coded=True)
        image.set_qform(qform if qcode else like.affine, code=int(qcode) if qcode else 1)
        image.set_sform(sform if scode else like.affine, code=int(scode) if scode else 1)
    return image


def _open_nifti(path: Path, what: str) -> nib.Nifti1Image:
    if not path.exists():
        raise InputError(f"{path}: {what} file not found.")
    if path.is_dir():
        raise InputError(f"{path}: this is a folder; give the {what} as a .nii or .nii.gz file.")
    if not is_nifti_path(path):
        raise InputError(
            f"{path}: the {what} must be a NIfTI file (.nii or .nii.gz). Convert DICOM series with "
            "dcm2niix, and other formats with nibabel or ITK-SNAP, first."
        )
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for garbage input
        raise InputError(
            f"{path}: cannot be read as NIfTI ({type(exc).__name__}: {exc}). The file is damaged or is "
            "not a NIfTI image despite its name."
        ) from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{path}: {type(image).__name__} is not a NIfTI-1/2 image.")
    return image


def _read_affine(image: nib.Nifti1Image, path: Path, what: str) -> np.ndarray:
    try:
        return np.asarray(image.affine, dtype=np.float64)
    except Exception as exc:  # nibabel fails variously on corrupt qform/sform fields
        raise InputError(f"{path}: the {what}'s orientation (qform/sform) cannot be read ({exc}).") from exc


def _check_affine(affine: np.ndarray, path: Path | str, what: str) -> np.ndarray:
    """Refuse an affine that does not place voxels in space: not 4x4, not finite, a voxel size of 0
    (a blank pixdim) or axes that coincide (singular). Outputs would otherwise land nowhere."""
    affine = np.asarray(affine, dtype=np.float64)
    fix = (
        "Repair the header (e.g. `fslorient -copyqform2sform`, or nibabel's set_qform/set_sform) or "
        "re-export the scan from its original data."
    )
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError(f"{path}: the {what}'s affine is not a finite 4x4 matrix ({affine.tolist()}). {fix}")
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if sizes.min() < 1e-6:
        raise InputError(
            f"{path}: the {what}'s affine gives a voxel size of 0 mm (voxel sizes {np.round(sizes, 6)}), "
            f"so its voxels have no place in space. {fix}"
        )
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6 * float(np.prod(sizes)):
        raise InputError(
            f"{path}: the {what}'s affine is singular (two voxel axes point the same way: "
            f"{np.round(affine[:3, :3], 4).tolist()}). {fix}"
        )
    return affine


#: More voxels than any MRI volume has (a 1290^3 grid): a header claiming more is corrupt.
MAX_VOXELS = 2**31


def _check_shape(image: nib.Nifti1Image, path: Path, what: str) -> None:
    shape = tuple(int(n) for n in image.shape)
    if min(shape, default=0) < 1 or float(np.prod(shape, dtype=np.float64)) > MAX_VOXELS:
        raise InputError(
            f"{path}: the header gives the {what} the shape {shape}, which no MRI volume has (at most "
            f"{MAX_VOXELS} voxels, none empty): the header is corrupt. Re-export or copy the file again."
        )


def _read_data(image: nib.Nifti1Image, path: Path, what: str) -> np.ndarray:
    try:
        return np.asarray(image.dataobj, dtype=np.float32)
    except (
        EOFError,
        OSError,
        zlib.error,
        gzip.BadGzipFile,
        ValueError,
        TypeError,
        OverflowError,
        MemoryError,
    ) as exc:
        raise InputError(
            f"{path}: the {what}'s voxel data could not be read ({type(exc).__name__}: {exc}). The file is "
            "truncated or corrupt (an interrupted copy or download?); copy it again."
        ) from exc


def _as_3d(data: np.ndarray, path: Path | str, what: str) -> np.ndarray:
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    elif data.ndim > 3 and all(s == 1 for s in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim == 4:
        raise InputError(
            f"{path}: this {what} is 4D with {data.shape[3]} volumes (shape {data.shape}); DISYRE analyses "
            "one 3D volume. Extract the one you want first (e.g. `fslroi in.nii.gz out.nii.gz 0 1`)."
        )
    if data.ndim > 4:
        raise InputError(
            f"{path}: this {what} has {data.ndim} dimensions (shape {data.shape}); DISYRE analyses one 3D "
            "volume. Extract it first (e.g. with nibabel: `img.slicer[..., 0, 0]`)."
        )
    if data.ndim != 3 or min(data.shape) < 2:
        raise InputError(
            f"{path}: this {what} has shape {data.shape}; a 3D volume (at least 2 voxels along each axis) "
            "is needed. 2D images and single slices cannot be analysed."
        )
    return np.ascontiguousarray(data)


def _check_finite(data: np.ndarray, path: Path | str, what: str) -> None:
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(
            f"{path}: the {what} has {int(bad.sum())} NaN or infinite voxels. Replace them first "
            "(e.g. `fslmaths in.nii.gz -nan out.nii.gz`, or numpy.nan_to_num)."
        )
