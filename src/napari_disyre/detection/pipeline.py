"""Anomaly detection on a whole scan: the one pipeline the CLI, the library and the widget share.

scan -> foreground -> model grid (checkpoint's spacing/orientation) -> intensities in [0, 1] ->
crop to the non-zero box (as the official evaluation does) -> slices along the checkpoint's axis ->
restoration engine -> back onto the scan's exact voxel grid, zero outside the brain.

Several contrasts (a :class:`~napari_disyre.scans.contrasts.MultiContrastScan` for a checkpoint of C
channels) go the same way as one image (C, X, Y, Z): one brain region, each contrast scaled by its own
percentiles, slices (N, C, H, W) to the detector. The result keeps one map per contrast
(``Detection.channel_maps``) beside the combined map (their mean, see
:func:`~napari_disyre.disyre.engine.combine_channels`), all on the scans' shared grid.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from ..errors import DisyreError, InputError
from ..restoration import Progress, run_to_end
from ..runtime.devices import autocast_dtype, resolve_device
from ..scans.contrasts import MultiContrastScan, as_channels
from ..scans.nifti import Volume
from ..scans.preprocessing import ModelInput, Preprocessing, foreground_bbox, prepare_contrasts, prepare_scan
from ..validation import DetectArguments, check
from .detectors import (
    Detector,
    Settings,
    contrasts_of,
    default_settings,
    healthy_quantiles_of,
    preprocessing_of,
    restore_stack,
)
from .postprocess import suggest_threshold


@dataclass
class Detection:
    """What detection produced, on the scan's own voxel grid (several contrasts: the first one's)."""

    scan: Volume
    anomaly_map: np.ndarray  # float32, 0 outside the brain; several contrasts: the channel maps' mean
    foreground: np.ndarray  # bool
    restorations: list[np.ndarray] = field(default_factory=list)  # per step, intensities in [0, 1]
    step_maps: list[np.ndarray] = field(default_factory=list)  # the map after steps 1..S (last = final)
    timesteps: list[int] = field(default_factory=list)
    settings: Settings | None = None  # RestorationSettings (DISYRE) or InferenceSettings (berdiff)
    device: str = "cpu"
    batch_size: int = 0
    seconds: float = 0.0
    suggested_threshold: float = 0.0
    flip_mask: np.ndarray | None = None  # Bernoulli diffusion: fraction of latent bits flipped, per voxel
    method: str = "disyre"  # which detector ran (napari_disyre.detection.detectors)
    #: several contrasts: the map of each, by contrast name in channel order (empty for one contrast);
    #: each restoration then holds the contrasts first, (C, X, Y, Z)
    channel_maps: dict[str, np.ndarray] = field(default_factory=dict)
    contrasts: tuple[str, ...] = ()  # the input channels by name, in order (one name for one contrast)
    runtime: str = "torch"  # what evaluated the networks: torch or onnxruntime


def iter_detect(
    scan: Volume | MultiContrastScan,
    checkpoint: Detector,
    settings: Settings | None = None,
    *,
    brain_mask: np.ndarray | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    keep_restorations: bool = True,
    keep_step_maps: bool = False,
    crop: bool = True,
    compile: bool = False,
    runtime: str = "auto",
) -> Generator[Progress, None, Detection]:
    """Detect anomalies in ``scan``, yielding :class:`~napari_disyre.restoration.Progress` as it goes.

    ``scan`` is one Volume for a one-channel checkpoint, or a MultiContrastScan holding the
    checkpoint's contrasts (by name, in any order; on one grid).
    ``runtime`` evaluates the networks: ``auto`` (ONNX Runtime for float32 on the CPU when installed,
    else torch), ``torch`` or ``onnxruntime`` (see ``runtime.sessions``).

    Per-step restorations in the progress events and the result are on the scan's grid, as are the
    maps after each step when ``keep_step_maps``. Stop iterating to cancel.
    """
    started = time.perf_counter()
    check(DetectArguments, {"checkpoint": checkpoint, "settings": settings}, "detect")
    channels = _channels_for(scan, contrasts_of(checkpoint))
    scan = channels.reference
    settings = settings or default_settings(checkpoint)
    spec = preprocessing_of(checkpoint)
    warn_if_coarse(scan, spec.spacing)
    prepared, box, slices = _model_slices(channels, spec, brain_mask, crop)
    torch_device = resolve_device(device)
    engine = restore_stack(
        checkpoint, slices, settings, device=torch_device, autocast=autocast_dtype(torch_device, precision),
        batch_size=batch_size, keep_restorations=keep_restorations, keep_step_maps=keep_step_maps,
        compile=compile, runtime=runtime,
    )  # fmt: skip
    to_scan = _ScanMapper(prepared, box, spec.slice_axis)
    while True:
        try:
            progress = next(engine)
        except StopIteration as stop:
            result = stop.value
            break
        if progress.restoration is not None:
            progress = dataclasses.replace(progress, restoration=to_scan(progress.restoration, masked=False))
        yield progress
    anomaly = _finite(to_scan(result.anomaly_map, masked=True), checkpoint, scan)
    return Detection(
        scan=scan,
        anomaly_map=anomaly,
        foreground=prepared.scan_foreground,
        restorations=[to_scan(r, masked=False) for r in result.restorations],
        step_maps=[to_scan(m, masked=True) for m in result.step_maps],
        timesteps=result.timesteps,
        settings=settings,
        device=str(torch_device),
        batch_size=result.batch_size,
        seconds=time.perf_counter() - started,
        suggested_threshold=suggest_threshold(
            anomaly, prepared.scan_foreground, healthy_quantiles_of(checkpoint)
        ),
        flip_mask=to_scan(result.flip_mask, masked=True) if result.flip_mask is not None else None,
        method=checkpoint.kind,
        contrasts=channels.contrasts if len(channels.volumes) > 1 else contrasts_of(checkpoint),
        channel_maps=(
            dict(zip(channels.contrasts, to_scan(result.channel_maps, masked=True), strict=True))
            if result.channel_maps is not None
            else {}
        ),
        runtime=result.runtime,
    )


def _finite(anomaly: np.ndarray, checkpoint: Detector, scan: Volume) -> np.ndarray:
    """Never hand on (or write) a map with NaN or infinite scores: it would threshold to "no anomaly"."""
    if not np.isfinite(anomaly).all():
        raise DisyreError(
            f"{checkpoint.name}: the model gave NaN or infinite scores for {scan.path or 'the scan'}; no map "
            "is made. The checkpoint is damaged (or its precision overflowed: try --precision float32)."
        )
    return anomaly


def _model_slices(
    channels: MultiContrastScan, spec: Preprocessing, brain_mask: np.ndarray | None, crop: bool
) -> tuple[ModelInput, tuple[slice, ...], np.ndarray]:
    try:
        return _prepared_slices(channels, spec, brain_mask, crop)
    except InputError as exc:  # the grid's own messages do not know the file
        raise InputError(f"{channels.reference.path or 'the scan'}: {exc}") from None


def _prepared_slices(
    channels: MultiContrastScan, spec: Preprocessing, brain_mask: np.ndarray | None, crop: bool
) -> tuple[ModelInput, tuple[slice, ...], np.ndarray]:
    """The input on the model grid, the crop box and the slices for the detector: (N, H, W) for one
    contrast, exactly as before contrasts existed; (N, C, H, W) for several."""
    scan = channels.reference
    if len(channels.volumes) == 1:
        prepared = prepare_scan(scan.data, scan.affine, spec, brain_mask)
        box = foreground_bbox(prepared.image > 0) if crop else tuple(slice(None) for _ in prepared.image.shape)
        return prepared, box, np.moveaxis(prepared.image[box], spec.slice_axis, 0)
    prepared = prepare_contrasts(channels.channels, scan.affine, spec, brain_mask)
    occupied = (prepared.image > 0).any(axis=0)
    box = foreground_bbox(occupied) if crop else tuple(slice(None) for _ in occupied.shape)
    return prepared, box, np.moveaxis(prepared.image[(slice(None), *box)], spec.slice_axis + 1, 0)


def _channels_for(scan: Volume | MultiContrastScan, contrasts: tuple[str, ...]) -> MultiContrastScan:
    """The input as the checkpoint's channels, in its order; one Volume only for a one-channel model."""
    if not isinstance(scan, Volume | MultiContrastScan):
        raise DisyreError(
            f"scan must be a Volume (load_scan(path), or Volume(data, affine)) or a MultiContrastScan, not "
            f"{type(scan).__name__}."
        )
    if isinstance(scan, MultiContrastScan) and (len(contrasts) > 1 or len(scan.volumes) > 1):
        return as_channels(scan.in_order(contrasts))
    if isinstance(scan, MultiContrastScan):
        scan = scan.reference
    if len(contrasts) > 1:
        raise InputError(
            f"this model takes {len(contrasts)} contrasts ({', '.join(contrasts)}) but one scan was given; "
            "give one scan per contrast, e.g. " + " ".join(f"--scan {c}=PATH" for c in contrasts) + "."
        )
    return as_channels(scan)


#: A scan whose coarsest voxel axis is this many times the model's is warned about.
COARSE_FACTOR = 3.0


class CoarseScanWarning(UserWarning):
    """The scan's voxels are far coarser than the model's grid: small lesions may be missed."""


#: What thick slices do to a detection; training says what they do to a model instead.
COARSE_DETECTION = (
    "anomaly maps of such thick slices are unreliable (small lesions vanish, slice edges look anomalous). "
    "Use a finer acquisition if there is one."
)


def warn_if_coarse(
    scan: Volume, model_spacing: tuple[float, float, float] | None, consequence: str = COARSE_DETECTION
) -> None:
    """Warn (not refuse: it may still be useful) when a scan's slices are far thicker than the grid the
    model was trained on (its declared spacing, else 1 mm, the official data's): interpolating 7 mm
    slices onto a 1.5 mm grid gives the network blurred images it has never seen."""
    reference = max(model_spacing) if model_spacing else 1.0
    coarsest = max(scan.spacing)
    if coarsest > COARSE_FACTOR * reference:
        warnings.warn(
            f"{scan.path or 'the scan'}: voxels of {'x'.join(f'{s:.3g}' for s in scan.spacing)} mm are far "
            f"coarser than the model's {reference:g} mm grid; {consequence}",
            CoarseScanWarning,
            stacklevel=3,
        )


def detect(
    scan: Volume,
    checkpoint: Detector,
    settings: Settings | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    **options: object,
) -> Detection:
    """:func:`iter_detect` run to the end (``options`` as there)."""
    return run_to_end(iter_detect(scan, checkpoint, settings, **options), on_progress)  # type: ignore[arg-type]


class _ScanMapper:
    """Puts a slice stack computed on the cropped model grid back onto the scan's voxel grid."""

    def __init__(self, prepared: ModelInput, box: tuple[slice, ...], axis: int):
        self.prepared = prepared
        self.box = box
        self.axis = axis

    def __call__(self, stack: np.ndarray, *, masked: bool) -> np.ndarray:
        """(N, H, W) -> the scan's grid; (N, C, H, W) -> (C, *grid), channel by channel."""
        if stack.ndim == 4:
            return np.stack([self(stack[:, c], masked=masked) for c in range(stack.shape[1])])
        volume = np.zeros(self.prepared.foreground.shape, dtype=np.float32)
        volume[self.box] = np.moveaxis(stack, 0, self.axis)
        out = self.prepared.grid.to_source(volume, order=1).astype(np.float32, copy=False)
        if masked:
            out[~self.prepared.scan_foreground] = 0
        return out
