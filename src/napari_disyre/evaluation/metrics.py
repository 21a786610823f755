"""Evaluation metrics of the DISYRE paper: voxel-level AP, AUROC and best Dice, and slice-level scores.

Everything here is numpy and scikit-learn only, so that evaluation runs without Qt or torch.

Conventions shared by every function:

* scores are float arrays of any shape; they are compared in float64 so that thresholds taken from
  ``np.linspace`` in float64 mean the same thing whatever the dtype of the anomaly map;
* a voxel is anomalous when its label is ``> 0``, so multi-class segmentations (BraTS 0-4) are
  binarised the way the paper does;
* an optional boolean ``region`` (usually the brain mask) restricts which voxels count;
* a metric that is undefined for the data (AP without any anomalous voxel, AUROC with a single class,
  Dice with nothing predicted and nothing labelled) is ``nan``: a 0 would silently drag averages
  down, and an exception would abort a whole evaluation because of one healthy scan.

AP and AUROC come from scikit-learn, as in the official evaluation. :func:`voxel_metrics` sorts the
voxels once and hands them to scikit-learn already in order, where its stable sort is then linear,
so that computing all metrics costs about one sort of the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

Reduction = Literal["mean", "max", "top100"]

#: The slice reductions compared by :func:`slice_level_metrics`, in the order they are reported.
REDUCTIONS: tuple[Reduction, ...] = ("mean", "max", "top100")

#: Number of voxels per volume that the official evaluation draws when it subsamples.
OFFICIAL_SAMPLE_SIZE = 10_000

_TOP_K = 100


@dataclass(frozen=True)
class VoxelMetrics:
    """Voxel-level results for one volume or a pool of volumes.

    ``best_dice`` is the maximum of the Dice curve and ``best_threshold`` the (lowest) threshold that
    reaches it; ``n_voxels`` and ``n_positive`` count the voxels that took part, so that a reader can
    tell an undefined (``nan``) metric from a bad one.
    """

    ap: float
    auroc: float
    best_dice: float
    best_threshold: float
    n_voxels: int
    n_positive: int


@dataclass(frozen=True)
class _Ranked:
    """Counted voxels sorted once by ascending score, with their binary labels in the same order."""

    scores: np.ndarray
    positive: np.ndarray

    @classmethod
    def from_counted(cls, scores: np.ndarray, positive: np.ndarray) -> _Ranked:
        order = np.argsort(scores)
        return cls(scores[order], positive[order])

    @property
    def n_positive(self) -> int:
        return int(np.count_nonzero(self.positive))


def _check_same_shape(reference: np.ndarray, other: np.ndarray, ref_name: str, other_name: str) -> None:
    if reference.shape != other.shape:
        raise ValueError(
            f"{ref_name} of shape {reference.shape} do not match {other_name} of shape {other.shape}; "
            "they must describe the same voxels"
        )


def _as_scores(scores: np.ndarray) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError("scores contain NaN or infinite values; metrics need finite anomaly scores")
    return array


def _counted(
    scores: np.ndarray, labels: np.ndarray, region: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and return the counted voxels as flat float64 scores and boolean labels."""
    scores_arr = np.asarray(scores)
    labels_arr = np.asarray(labels)
    _check_same_shape(scores_arr, labels_arr, "scores", "labels")
    if region is None:
        return _as_scores(scores_arr.ravel()), labels_arr.ravel() > 0
    region_arr = np.asarray(region, dtype=bool)
    _check_same_shape(scores_arr, region_arr, "scores", "region")
    return _as_scores(scores_arr[region_arr]), labels_arr[region_arr] > 0


def _ap(positive: np.ndarray, scores: np.ndarray) -> float:
    """AP, or nan without any positive (scikit-learn would warn and return 0)."""
    if not positive.any():
        return float("nan")
    return float(average_precision_score(positive, scores))


def _auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """AUROC, or nan when only one class is present (scikit-learn would raise)."""
    n_positive = int(np.count_nonzero(positive))
    if n_positive == 0 or n_positive == positive.size:
        return float("nan")
    return float(roc_auc_score(positive, scores))


def _dice_curve(ranked: _Ranked, n_thresholds: int) -> tuple[np.ndarray, np.ndarray]:
    """Dice of ``score > t`` at ``n_thresholds`` evenly spaced t, from the sorted voxels in O(n log n).

    With ascending scores, ``searchsorted(..., side="right")`` is the number of voxels at or below t,
    so everything after it is predicted; the positives below it are counted by a second searchsorted
    in the positions of the positives, which keeps memory at O(n_positive) instead of O(n).
    """
    if n_thresholds < 1:
        raise ValueError(f"n_thresholds must be at least 1, got {n_thresholds}")
    if ranked.scores.size == 0:
        return np.empty(0), np.empty(0)
    thresholds = np.linspace(ranked.scores[0], ranked.scores[-1], n_thresholds)
    not_predicted = np.searchsorted(ranked.scores, thresholds, side="right")
    positive_positions = np.flatnonzero(ranked.positive)
    n_true = positive_positions.size
    true_positives = n_true - np.searchsorted(positive_positions, not_predicted, side="left")
    n_predicted = ranked.scores.size - not_predicted
    denominator = n_predicted + n_true
    dice = np.full(n_thresholds, np.nan)
    defined = denominator > 0
    dice[defined] = 2.0 * true_positives[defined] / denominator[defined]
    return thresholds, dice


def _best_dice(ranked: _Ranked, n_thresholds: int) -> tuple[float, float]:
    """Maximum of the Dice curve and the lowest threshold reaching it; (nan, nan) without positives.

    Without positives every non-empty prediction has Dice 0, a value that would look like a failure
    of the method; the best Dice is undefined instead.
    """
    if ranked.n_positive == 0:
        return float("nan"), float("nan")
    thresholds, dice = _dice_curve(ranked, n_thresholds)
    best = int(np.argmax(dice))
    return float(dice[best]), float(thresholds[best])


def average_precision(scores: np.ndarray, labels: np.ndarray, region: np.ndarray | None = None) -> float:
    """Voxel-level average precision, the paper's main metric; nan when no voxel is anomalous.

    A healthy scan has no defined AP: reporting 0 would penalise the method for a scan it cannot
    get wrong, so the value is nan and averages should skip it.
    """
    flat_scores, positive = _counted(scores, labels, region)
    return _ap(positive, flat_scores)


def auroc(scores: np.ndarray, labels: np.ndarray, region: np.ndarray | None = None) -> float:
    """Voxel-level area under the ROC curve; nan when the counted voxels hold a single class."""
    flat_scores, positive = _counted(scores, labels, region)
    return _auroc(positive, flat_scores)


def dice_curve(
    scores: np.ndarray, labels: np.ndarray, region: np.ndarray | None = None, n_thresholds: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Dice of the prediction ``score > t`` for ``t`` in ``linspace(min, max, n_thresholds)``.

    The thresholds span the counted voxels' scores, so the curve needs no calibration of the map;
    the comparison is strict, so at ``t = max`` nothing is predicted. Dice is nan at a threshold where
    nothing is predicted and nothing is labelled. Both arrays are empty when no voxel is counted.
    Memory stays O(n): the voxels are sorted once instead of thresholding them 200 times.
    """
    flat_scores, positive = _counted(scores, labels, region)
    return _dice_curve(_Ranked.from_counted(flat_scores, positive), n_thresholds)


def best_dice(
    scores: np.ndarray, labels: np.ndarray, region: np.ndarray | None = None, n_thresholds: int = 200
) -> tuple[float, float]:
    """The maximum of :func:`dice_curve` and the lowest threshold reaching it; (nan, nan) without positives.

    This is the paper's "best possible Dice": an upper bound that does not depend on choosing a
    threshold on held-out data.
    """
    flat_scores, positive = _counted(scores, labels, region)
    return _best_dice(_Ranked.from_counted(flat_scores, positive), n_thresholds)


def dice_precision_recall(
    prediction_mask: np.ndarray, labels: np.ndarray, region: np.ndarray | None = None
) -> tuple[float, float, float]:
    """(dice, precision, recall) of a binary prediction, e.g. an anomaly map thresholded by the user.

    Precision is nan when nothing is predicted, recall nan when nothing is labelled and Dice nan when
    both are empty: each is a ratio whose denominator is then zero, and none of them is a failure.
    """
    prediction_arr = np.asarray(prediction_mask)
    labels_arr = np.asarray(labels)
    _check_same_shape(prediction_arr, labels_arr, "prediction_mask", "labels")
    predicted = prediction_arr.astype(bool)
    positive = labels_arr > 0
    if region is not None:
        region_arr = np.asarray(region, dtype=bool)
        _check_same_shape(prediction_arr, region_arr, "prediction_mask", "region")
        predicted, positive = predicted[region_arr], positive[region_arr]
    true_positives = int(np.count_nonzero(predicted & positive))
    n_predicted = int(np.count_nonzero(predicted))
    n_true = int(np.count_nonzero(positive))
    dice = _ratio(2 * true_positives, n_predicted + n_true)
    return dice, _ratio(true_positives, n_predicted), _ratio(true_positives, n_true)


def _concatenate(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    """``np.concatenate`` that also accepts no arrays at all (an empty pool gives nan metrics)."""
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def _per_slice(volume: np.ndarray, axis: int) -> np.ndarray:
    """The volume as a (n_slices, voxels_per_slice) array, one row per slice along ``axis``."""
    array = np.asarray(volume)
    if array.ndim < 2:
        raise ValueError(
            f"a volume with at least 2 dimensions is needed to slice it, got shape {array.shape}"
        )
    moved = np.moveaxis(array, axis, 0)
    return moved.reshape(moved.shape[0], -1)


def slice_scores(score_volume: np.ndarray, axis: int = 2, reduction: Reduction = "mean") -> np.ndarray:
    """One anomaly score per slice along ``axis``, for slice-level detection.

    ``"mean"`` and ``"max"`` reduce the whole slice; ``"top100"`` averages the 100 largest values of
    the slice (all of them when the slice is smaller), which is less noisy than the max and less
    diluted by healthy tissue than the mean.
    """
    rows = _per_slice(score_volume, axis).astype(np.float64, copy=False)
    if reduction == "mean":
        return rows.mean(axis=1)
    if reduction == "max":
        return rows.max(axis=1)
    if reduction == "top100":
        k = min(_TOP_K, rows.shape[1])
        largest = np.partition(rows, rows.shape[1] - k, axis=1)[:, rows.shape[1] - k :]
        return largest.mean(axis=1)
    raise ValueError(f"unknown slice reduction {reduction!r}; expected one of {REDUCTIONS}")


def slice_labels(label_volume: np.ndarray, axis: int = 2) -> np.ndarray:
    """1 for each slice along ``axis`` that holds at least one anomalous voxel (label > 0), else 0."""
    return (_per_slice(label_volume, axis) > 0).any(axis=1).astype(np.int8)


def slice_level_metrics(
    score_volumes: Iterable[np.ndarray],
    label_volumes: Iterable[np.ndarray],
    axis: int = 2,
) -> dict[str, dict[str, float]]:
    """Slice-level AUROC and AP for each reduction, with the slices of all volumes pooled.

    Returns ``{reduction: {"auroc": ..., "ap": ...}}`` for ``"mean"``, ``"max"`` and ``"top100"``;
    a metric is nan when the pooled slices do not allow it (no anomalous slice, or a single class).
    """
    scores_list = [np.asarray(volume) for volume in score_volumes]
    labels_list = [np.asarray(volume) for volume in label_volumes]
    if len(scores_list) != len(labels_list):
        raise ValueError(
            f"got {len(scores_list)} score volumes but {len(labels_list)} label volumes; they must pair up"
        )
    for scores, labels in zip(scores_list, labels_list, strict=True):
        _check_same_shape(scores, labels, "scores", "labels")
    positive = _concatenate([slice_labels(labels, axis) > 0 for labels in labels_list], bool)
    results: dict[str, dict[str, float]] = {}
    for reduction in REDUCTIONS:
        pooled = _concatenate([slice_scores(scores, axis, reduction) for scores in scores_list], np.float64)
        results[reduction] = {"auroc": _auroc(positive, pooled), "ap": _ap(positive, pooled)}
    return results


def sample_voxels(
    n_voxels_total: int, n: int = OFFICIAL_SAMPLE_SIZE, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """``n`` flat voxel indices drawn uniformly *with* replacement, as the official evaluation does.

    The official code evaluates ``randint(total, (10000,))`` voxels per volume; this reproduces the
    protocol (not its random stream) for the "official parity" mode. ``seed`` may be a Generator so
    that several volumes can draw from one reproducible stream.
    """
    if n_voxels_total < 1:
        raise ValueError(f"cannot sample voxels from a volume of {n_voxels_total} voxels")
    if n < 0:
        raise ValueError(f"the number of sampled voxels must not be negative, got {n}")
    return np.random.default_rng(seed).integers(0, n_voxels_total, size=n)


def _metrics_of_counted(scores: np.ndarray, positive: np.ndarray, n_thresholds: int) -> VoxelMetrics:
    """All voxel metrics from one sort: scikit-learn receives the voxels already in descending order."""
    ranked = _Ranked.from_counted(scores, positive)
    descending_scores, descending_positive = ranked.scores[::-1], ranked.positive[::-1]
    dice_value, threshold = _best_dice(ranked, n_thresholds)
    return VoxelMetrics(
        ap=_ap(descending_positive, descending_scores),
        auroc=_auroc(descending_positive, descending_scores),
        best_dice=dice_value,
        best_threshold=threshold,
        n_voxels=int(ranked.scores.size),
        n_positive=ranked.n_positive,
    )


def voxel_metrics(
    scores: np.ndarray, labels: np.ndarray, region: np.ndarray | None = None, n_thresholds: int = 200
) -> VoxelMetrics:
    """AP, AUROC and best Dice of one volume at once, flattening, masking and sorting only once."""
    flat_scores, positive = _counted(scores, labels, region)
    return _metrics_of_counted(flat_scores, positive, n_thresholds)


def _sampled(
    scores: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    scores_arr = np.asarray(scores)
    labels_arr = np.asarray(labels)
    _check_same_shape(scores_arr, labels_arr, "scores", "labels")
    indices = sample_voxels(scores_arr.size, n, rng)
    return _as_scores(scores_arr.ravel()[indices]), labels_arr.ravel()[indices] > 0


def pooled_voxel_metrics(
    items: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    n_thresholds: int = 200,
    sample: int | None = None,
    seed: int = 0,
) -> VoxelMetrics:
    """Voxel metrics over the pooled voxels of several volumes, as the paper reports them.

    By default every counted voxel (inside each volume's region) joins the pool. With ``sample=n``,
    ``n`` voxels per volume are drawn with replacement from the *whole* volume, region ignored, which
    is what the official evaluation does; the draws come from one generator seeded with ``seed``, so
    the same volumes in the same order give the same pool.
    """
    rng = np.random.default_rng(seed)
    pooled_scores: list[np.ndarray] = []
    pooled_positive: list[np.ndarray] = []
    for scores, labels, region in items:
        if sample is None:
            flat_scores, positive = _counted(scores, labels, region)
        else:
            if region is not None:
                _check_same_shape(np.asarray(scores), np.asarray(region), "scores", "region")
            flat_scores, positive = _sampled(scores, labels, sample, rng)
        pooled_scores.append(flat_scores)
        pooled_positive.append(positive)
    return _metrics_of_counted(
        _concatenate(pooled_scores, np.float64), _concatenate(pooled_positive, bool), n_thresholds
    )
