"""Evaluate anomaly maps against lesion labels, the way the DISYRE paper reports them.

Three steps, each reusable on its own: pair scans with their labels (:func:`cases_by_name`,
:func:`cases_in_folders`, :func:`cases_from_csv`); score every case with DISYRE at one or more step
counts and with the baselines (:func:`score_case`); pool the metrics (:func:`summarise`). Every score
of a case is measured on the same voxels (the brain mask, else the scan's foreground), so DISYRE and
the baselines are compared honestly. Qt-free; torch is only imported when DISYRE runs.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..detection.saved_maps import check_saved_map, map_record, record_path
from ..errors import InputError
from ..outputs import write_json
from ..scans.contrasts import MultiContrastScan, load_contrasts
from ..scans.nifti import Volume, load_matching, load_scan, save_volume
from ..scans.preprocessing import foreground_mask
from .cases import Case
from .metrics import (
    VoxelMetrics,
    dice_precision_recall,
    pooled_voxel_metrics,
    slice_level_metrics,
    voxel_metrics,
)


def zscore_in_region(data: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The scan z-scored with the mean and standard deviation of its ``region`` voxels, unclipped:
    raw scanner values differ in scale between patients, which blurs a baseline pooled over them."""
    inside = data[region].astype(np.float64)
    std = float(inside.std()) if inside.size else 0.0
    mean = float(inside.mean()) if inside.size else 0.0
    return ((data - mean) / (std if std > 0 else 1.0)).astype(np.float32)


#: Scores that need no model, from the scan and the region that counts: the raw scanner values or
#: the per-volume z-score (``-zscore``), bright-is-anomalous or dark-is-anomalous (``inverted-``).
BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "intensity": lambda data, region: data.astype(np.float32),
    "inverted-intensity": lambda data, region: -data.astype(np.float32),
    "intensity-zscore": zscore_in_region,
    "inverted-intensity-zscore": lambda data, region: -zscore_in_region(data, region),
}


@dataclass
class ScoredCase:
    """A case loaded on its scan's grid with every score computed for it (all float32, same shape)."""

    case: Case
    scan: Volume
    label: np.ndarray  # bool
    region: np.ndarray  # bool: the voxels that count
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    inputs: MultiContrastScan | None = None  # several contrasts (``scan`` is the first of them)

    @property
    def detection_input(self) -> Volume | MultiContrastScan:
        return self.inputs if self.inputs is not None else self.scan


@dataclass(frozen=True)
class MethodSummary:
    """Pooled and per-volume results of one score."""

    name: str
    pooled: VoxelMetrics
    per_volume: dict[str, VoxelMetrics]
    slice_level: dict[str, dict[str, float]]
    seconds_per_volume: float
    at_threshold: dict[str, float] | None = None  # dice, precision, recall at --threshold


def disyre_name(steps: int, fast: bool = False) -> str:
    """The report's name of a DISYRE score: ``DISYRE S=4``, or ``DISYRE S=1 fast`` in fast mode."""
    return f"DISYRE S={steps}" + (" fast" if fast else "")


def load_case(case: Case, label_values: Sequence[int] | None = None) -> ScoredCase:
    """Load the scan, its label (binarised) and the region where metrics count.

    A voxel is anomalous when its label is > 0 or, with ``label_values``, one of those values: a
    contrast may show only part of a multi-class lesion (T1c shows the BraTS tumour core, labels 1, 3
    and 4, not the oedema, 2), and users want both figures. The label and mask must be on the scan's
    grid (same shape and affine); :func:`load_matching` names both files otherwise. Several contrasts
    must share that grid too; the region is then the union of their foregrounds, as in detection.
    A label marking every counted voxel is refused, as an empty one is: any map would score AP and
    Dice 1 on it (it is usually the brain mask given as the label).
    """
    inputs = load_contrasts(dict(case.contrasts)) if case.contrasts else None
    scan = inputs.reference if inputs is not None else load_scan(case.scan)
    label = binarise_label(load_matching(case.label, scan, what="label"), label_values)
    mask = load_matching(case.brain_mask, scan, what="brain mask") if case.brain_mask else None
    channels = inputs.channels if inputs is not None else [scan.data]
    region = np.logical_or.reduce([foreground_mask(data, mask) for data in channels])
    if region.any() and label[region].all():
        raise InputError(
            f"{case.label}: this label marks every one of the {int(region.sum())} counted voxels as anomalous, "
            "so every metric would be a perfect 1 whatever the map. Is it the brain mask? Give the lesion label."
        )
    return ScoredCase(case, scan, label, region, inputs=inputs)


def binarise_label(label: np.ndarray, values: Sequence[int] | None = None) -> np.ndarray:
    """``label > 0``, or membership in ``values`` when given (boolean, same shape)."""
    if values is None:
        return label > 0
    return np.isin(np.rint(label).astype(np.int64), np.asarray(values, dtype=np.int64))


def score_case(
    scored: ScoredCase,
    checkpoint=None,
    steps: Sequence[int] = (),
    baselines: Sequence[str] = ("intensity",),
    *,
    settings=None,
    maps_dir: Path | None = None,
    detect_options: dict | None = None,
    on_progress: Callable[[object], None] | None = None,
    postprocessing=None,
) -> ScoredCase:
    """Add the baselines' scores and DISYRE's map for each step count in ``steps`` to ``scored``
    (any checkpoint, either method: :func:`score_detection`, which also says how maps are cached and
    post-processed)."""
    for name in baselines:
        if name not in BASELINES:
            raise InputError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}.")
        started = time.perf_counter()
        scored.scores[name] = BASELINES[name](scored.scan.data, scored.region)
        scored.seconds[name] = time.perf_counter() - started
    for s in steps:
        score_detection(
            scored,
            checkpoint,
            dataclasses.replace(settings, steps=s) if settings is not None else None,
            disyre_name(s, settings is not None and settings.fast),
            f"S{s}",
            maps_dir,
            detect_options,
            on_progress,
            postprocessing=postprocessing,
            steps=s,
        )
    return scored


def score_detection(
    scored: ScoredCase,
    checkpoint,
    settings,
    name: str,
    tag: str,
    maps_dir: Path | None = None,
    detect_options: dict | None = None,
    on_progress: Callable[[object], None] | None = None,
    postprocessing=None,
    **overrides: object,
) -> ScoredCase:
    """Add the map of one detection (either method; ``settings`` None: the checkpoint's defaults with
    ``overrides``, see :func:`~napari_disyre.detection.detectors.default_settings`) to ``scored`` under ``name``.

    With ``maps_dir``, a map saved there earlier (``<id>_<tag>_anomaly_map.nii.gz``) is reused
    instead of running the model, and a newly computed one is saved there, so a second evaluation
    (other metrics, other baselines) costs no restoration. Beside each map a JSON record holds what
    made it (:func:`~napari_disyre.detection.saved_maps.map_record`); a map whose record differs from this
    run's is refused, never reused; without a checkpoint only the scan is compared. ``postprocessing``
    (:class:`~napari_disyre.detection.postprocess.MapPostprocessing`) is applied within the case's region; saved
    maps stay raw, so one saved map serves every post-processing.
    """
    saved = maps_dir / f"{scored.case.id}_{tag}_anomaly_map.nii.gz" if maps_dir else None
    if checkpoint is None and (saved is None or not saved.exists()):
        raise InputError(f"{saved or name}: no saved map, and no checkpoint was given to compute it.")
    mask = (
        load_matching(scored.case.brain_mask, scored.scan, what="brain mask")
        if scored.case.brain_mask
        else None
    )
    from ..detection.detectors import default_settings

    if checkpoint is not None and settings is None:
        settings = default_settings(checkpoint, **overrides)
    record = map_record(scored.detection_input, mask, checkpoint, settings, detect_options or {})
    if saved is not None and saved.exists():
        check_saved_map(saved, record)
        raw = load_matching(saved, scored.scan, what="saved anomaly map").astype(np.float32)
        seconds = math.nan  # not measured: the map was computed earlier
    else:
        from ..detection.pipeline import detect

        detection = detect(
            scored.detection_input,
            checkpoint,
            settings,
            brain_mask=mask,
            keep_restorations=False,
            on_progress=on_progress,
            **(detect_options or {}),
        )
        raw, seconds = detection.anomaly_map, detection.seconds
        if saved is not None:
            write_json(record_path(saved), record)  # first: a map never lacks its record
            save_volume(saved, raw, scored.scan, kind="map")
    scored.scores[name] = postprocessing.apply(raw, scored.region) if postprocessing else raw
    scored.seconds[name] = seconds
    return scored


def rank_combination(first: np.ndarray, second: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The mean of two scores' ranks within ``region`` (each in [0, 1]): a scale-free way to ask what
    a model adds to a strong baseline such as FLAIR intensity. Outside the region the result is 0."""
    from scipy.stats import rankdata

    combined = np.zeros(first.shape, dtype=np.float32)
    n = int(region.sum())
    combined[region] = (rankdata(first[region]) + rankdata(second[region])) / (2.0 * n)
    return combined


# -- summaries ------------------------------------------------------------------------------------


def summarise(
    cases: Sequence[ScoredCase],
    *,
    sample: int | None = None,
    seed: int = 0,
    threshold: float | None = None,
    slice_axis: int = 2,
) -> list[MethodSummary]:
    """Pooled and per-volume metrics of every score the cases share, in the order they were added.

    Per-volume AP and Dice are nan for a case without lesion voxels (undefined, not 0); its voxels
    still count as negatives in the pooled figures. Slice-level metrics score each slice from the
    voxels inside the region only.
    """
    require_lesion_voxels(cases)
    names = [n for n in cases[0].scores if all(n in c.scores for c in cases)]
    summaries = []
    for name in names:
        per_volume = {c.case.id: voxel_metrics(c.scores[name], c.label, c.region) for c in cases}
        pooled = pooled_voxel_metrics(
            ((c.scores[name], c.label, c.region) for c in cases), sample=sample, seed=seed
        )
        inside = [_inside(c.scores[name], c.region) for c in cases]
        slice_level = slice_level_metrics(inside, [c.label & c.region for c in cases], axis=slice_axis)
        timed = [c.seconds[name] for c in cases if not math.isnan(c.seconds[name])]
        at_threshold = None
        if threshold is not None and name.startswith("DISYRE"):
            dice, precision, recall = _pooled_at_threshold(cases, name, threshold)
            at_threshold = {"threshold": threshold, "dice": dice, "precision": precision, "recall": recall}
        summaries.append(
            MethodSummary(
                name=name,
                pooled=pooled,
                per_volume=per_volume,
                slice_level=slice_level,
                seconds_per_volume=float(np.mean(timed)) if timed else math.nan,
                at_threshold=at_threshold,
            )
        )
    return summaries


def require_lesion_voxels(cases: Sequence[ScoredCase]) -> None:
    """Refuse an evaluation in which no label marks a single anomalous voxel inside the counted
    region: AP, Dice and AUROC would all be undefined (n/a), which says nothing about the model."""
    if not cases:
        raise InputError("nothing to evaluate: no cases were given.")
    if not any((c.label & c.region).any() for c in cases):
        where = ", ".join(str(c.case.label) for c in cases[:3]) + (", ..." if len(cases) > 3 else "")
        raise InputError(
            f"no label marks any anomalous voxel inside the brain ({where}), so every metric would be "
            "undefined (n/a). Check that these are the lesion labels, that --label-values names values "
            "they contain, and that the brain masks cover the lesions."
        )


def _inside(score: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The score with every voxel outside the region set to the region's minimum, so that slice
    reductions (mean, max, top-100) only see brain voxels."""
    low = float(score[region].min()) if region.any() else 0.0
    return np.where(region, score, low)


def _pooled_at_threshold(
    cases: Iterable[ScoredCase], name: str, threshold: float
) -> tuple[float, float, float]:
    predicted = np.concatenate([(c.scores[name] > threshold)[c.region] for c in cases])
    positive = np.concatenate([c.label[c.region] for c in cases])
    return dice_precision_recall(predicted, positive)
