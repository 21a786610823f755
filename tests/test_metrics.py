"""Tests of the evaluation metrics against hand computations, scikit-learn and brute force."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from napari_disyre.evaluation.metrics import (
    VoxelMetrics,
    auroc,
    average_precision,
    best_dice,
    dice_curve,
    dice_precision_recall,
    pooled_voxel_metrics,
    sample_voxels,
    slice_labels,
    slice_level_metrics,
    slice_scores,
    voxel_metrics,
)

# Ranked by descending score: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-).
# AP = sum over positives of precision at its rank * 1/2 = 1/1 * 1/2 + 2/3 * 1/2 = 5/6.
# AUROC = fraction of (positive, negative) pairs ranked correctly: 0.8 beats 0.4 and 0.1, 0.35 beats
# only 0.1, so 3/4.
TINY_SCORES = np.array([0.1, 0.4, 0.35, 0.8])
TINY_LABELS = np.array([0, 0, 1, 1])

# Five voxels whose thresholds linspace(0, 199, 200) are exactly the integers 0..199.
# The two positives score 100 and 150, there are n_true = 2 of them; prediction is score > t:
#   t in [0, 50):    predicted {50, 100, 150, 199}  TP 2  dice 2*2/(4+2) = 2/3
#   t in [50, 100):  predicted {100, 150, 199}      TP 2  dice 2*2/(3+2) = 4/5
#   t in [100, 150): predicted {150, 199}           TP 1  dice 2*1/(2+2) = 1/2
#   t in [150, 199]: predicted {199} or nothing     TP 0  dice 0
# With ">=" instead of ">", t = 50 would still predict the voxel scoring 50 (dice 2/3), so the best
# threshold 50 checks the strict rule.
FIVE_SCORES = np.array([0.0, 50.0, 100.0, 150.0, 199.0])
FIVE_LABELS = np.array([0, 0, 1, 1, 0])


def _five_voxel_expected_curve() -> np.ndarray:
    t = np.arange(200)
    return np.select([t < 50, t < 100, t < 150], [2 / 3, 4 / 5, 1 / 2], default=0.0)


def _brute_force_dice(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    predicted = scores[:, None] > thresholds[None, :]
    true_positives = (predicted & positive[:, None]).sum(axis=0)
    return 2 * true_positives / (predicted.sum(axis=0) + positive.sum())


def _random_volume(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    scores = rng.random(shape)
    labels = (rng.random(shape) < 0.1 + 0.5 * scores) * rng.integers(1, 5, shape)
    region = rng.random(shape) < 0.7
    return scores, labels, region


def test_tiny_example_ap_and_auroc_by_hand():
    assert average_precision(TINY_SCORES, TINY_LABELS) == pytest.approx(5 / 6, abs=1e-12)
    assert auroc(TINY_SCORES, TINY_LABELS) == pytest.approx(0.75, abs=1e-12)


def test_five_voxel_dice_curve_by_hand():
    thresholds, dice = dice_curve(FIVE_SCORES, FIVE_LABELS)
    np.testing.assert_array_equal(thresholds, np.arange(200.0))
    np.testing.assert_allclose(dice, _five_voxel_expected_curve(), rtol=0, atol=1e-15)
    assert dice[49] == pytest.approx(2 / 3) and dice[50] == pytest.approx(4 / 5)
    assert dice[100] == pytest.approx(1 / 2) and dice[199] == 0.0


def test_five_voxel_best_dice_is_the_lowest_threshold_of_the_maximum():
    assert best_dice(FIVE_SCORES, FIVE_LABELS) == pytest.approx((0.8, 50.0), abs=1e-12)


def test_thresholds_follow_linspace_of_the_scores_and_n_thresholds():
    scores = np.array([3.0, 8.0, 13.0, 18.0, 23.0])
    thresholds, dice = dice_curve(scores, FIVE_LABELS, n_thresholds=5)
    np.testing.assert_array_equal(thresholds, [3.0, 8.0, 13.0, 18.0, 23.0])
    # Every threshold equals a score, which the strict rule leaves unpredicted: predicted sets are
    # {8, 13+, 18+, 23}, {13+, 18+, 23}, {18+, 23}, {23} and {} with the positives marked +.
    np.testing.assert_allclose(dice, [2 / 3, 4 / 5, 1 / 2, 0.0, 0.0], atol=1e-15)


def test_ap_and_auroc_agree_with_scikit_learn_on_random_data():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(3000), 2)  # rounding creates ties
    labels = (rng.random(3000) < 0.2 + 0.4 * scores).astype(int)
    expected_ap = average_precision_score(labels, scores)
    expected_auroc = roc_auc_score(labels, scores)
    assert average_precision(scores, labels) == pytest.approx(expected_ap, abs=1e-6)
    assert auroc(scores, labels) == pytest.approx(expected_auroc, abs=1e-6)
    combined = voxel_metrics(scores, labels)
    assert combined.ap == pytest.approx(expected_ap, abs=1e-6)
    assert combined.auroc == pytest.approx(expected_auroc, abs=1e-6)


@pytest.mark.parametrize("decimals", [None, 2])
def test_fast_dice_curve_equals_brute_force(decimals):
    rng = np.random.default_rng(2)
    scores = rng.normal(size=2000)
    if decimals is not None:
        scores = np.round(scores, decimals)
    positive = rng.random(2000) < 0.15
    thresholds, dice = dice_curve(scores, positive.astype(np.uint8))
    expected_thresholds = np.linspace(scores.min(), scores.max(), 200)
    np.testing.assert_array_equal(thresholds, expected_thresholds)
    np.testing.assert_allclose(
        dice, _brute_force_dice(scores, positive, expected_thresholds), rtol=0, atol=1e-12
    )
    best = int(np.argmax(dice))
    assert best_dice(scores, positive) == (dice[best], thresholds[best])


def test_voxel_metrics_bundle_matches_the_single_functions():
    rng = np.random.default_rng(3)
    scores, labels, region = _random_volume(rng, (12, 10, 9))
    result = voxel_metrics(scores.astype(np.float32), labels, region)
    assert isinstance(result, VoxelMetrics)
    assert result.ap == pytest.approx(average_precision(scores.astype(np.float32), labels, region), abs=1e-12)
    assert result.auroc == pytest.approx(auroc(scores.astype(np.float32), labels, region), abs=1e-12)
    assert (result.best_dice, result.best_threshold) == best_dice(scores.astype(np.float32), labels, region)
    assert result.n_voxels == int(region.sum())
    assert result.n_positive == int((labels[region] > 0).sum())


def test_region_masking_changes_ap_and_auroc_as_computed_by_hand():
    # Without the negative scoring 0.4, both positives outrank the only negative left.
    region = np.array([True, False, True, True])
    assert average_precision(TINY_SCORES, TINY_LABELS, region) == pytest.approx(1.0)
    assert auroc(TINY_SCORES, TINY_LABELS, region) == pytest.approx(1.0)


def test_region_masking_changes_the_dice_thresholds_as_computed_by_hand():
    # Without the negative scoring 199 the thresholds are linspace(0, 150, 200) = k * 150/199 and
    # score > t predicts exactly the two positives for 50 <= t < 100, first at k = 67 (t = 50.25...).
    region = np.array([True, True, True, True, False])
    thresholds, _ = dice_curve(FIVE_SCORES, FIVE_LABELS, region)
    np.testing.assert_array_equal(thresholds, np.linspace(0.0, 150.0, 200))
    dice_value, threshold = best_dice(FIVE_SCORES, FIVE_LABELS, region)
    assert dice_value == pytest.approx(1.0)
    assert threshold == pytest.approx(67 * 150 / 199, abs=1e-12)


def test_multi_class_labels_are_binarised():
    brats_like = np.array([0, 0, 2, 4])
    assert average_precision(TINY_SCORES, brats_like) == pytest.approx(5 / 6)
    assert auroc(TINY_SCORES, brats_like) == pytest.approx(0.75)
    assert best_dice(FIVE_SCORES, np.array([0, 0, 1, 3, 0])) == pytest.approx((0.8, 50.0))


def test_empty_label_gives_nan_without_warning_or_exception():
    scores = np.array([0.3, 0.1, 0.7])
    empty = np.zeros(3, dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(average_precision(scores, empty))
        assert math.isnan(auroc(scores, empty))
        assert all(math.isnan(value) for value in best_dice(scores, empty))
        result = voxel_metrics(scores, empty)
    assert all(math.isnan(v) for v in (result.ap, result.auroc, result.best_dice, result.best_threshold))
    assert (result.n_voxels, result.n_positive) == (3, 0)


def test_dice_curve_is_nan_where_nothing_is_predicted_or_labelled():
    _, dice = dice_curve(np.array([0.3, 0.1, 0.7]), np.zeros(3), n_thresholds=3)
    np.testing.assert_array_equal(dice[:2], [0.0, 0.0])
    assert math.isnan(dice[2])


def test_auroc_is_nan_when_every_voxel_is_anomalous():
    assert math.isnan(auroc(TINY_SCORES, np.ones(4)))
    assert average_precision(TINY_SCORES, np.ones(4)) == pytest.approx(1.0)


def test_empty_region_gives_nan_metrics_and_an_empty_curve():
    nothing = np.zeros(4, dtype=bool)
    thresholds, dice = dice_curve(TINY_SCORES, TINY_LABELS, nothing)
    assert thresholds.size == 0 and dice.size == 0
    result = voxel_metrics(TINY_SCORES, TINY_LABELS, nothing)
    assert math.isnan(result.ap) and math.isnan(result.best_dice) and result.n_voxels == 0


def test_dice_precision_recall_by_hand():
    prediction = np.array([1, 1, 0, 0, 1], dtype=bool)
    labels = np.array([0, 2, 1, 0, 0])
    # TP = 1 (index 1), 3 predicted, 2 labelled.
    assert dice_precision_recall(prediction, labels) == pytest.approx((2 / 5, 1 / 3, 1 / 2))
    # Without index 0: TP = 1, 2 predicted, 2 labelled.
    region = np.array([False, True, True, True, True])
    assert dice_precision_recall(prediction, labels, region) == pytest.approx((1 / 2, 1 / 2, 1 / 2))


def test_dice_precision_recall_undefined_parts_are_nan():
    nothing = np.zeros(4, dtype=bool)
    dice, precision, recall = dice_precision_recall(nothing, np.array([0, 1, 0, 0]))
    assert (dice, recall) == (0.0, 0.0) and math.isnan(precision)
    dice, precision, recall = dice_precision_recall(np.array([1, 0, 0, 0]), np.zeros(4))
    assert (dice, precision) == (0.0, 0.0) and math.isnan(recall)
    assert all(math.isnan(value) for value in dice_precision_recall(nothing, np.zeros(4)))


def test_slice_reductions_by_hand():
    volume = np.arange(12.0).reshape(2, 2, 3)  # slice k along axis 2 holds k, k+3, k+6, k+9
    np.testing.assert_allclose(slice_scores(volume, reduction="mean"), [4.5, 5.5, 6.5])
    np.testing.assert_allclose(slice_scores(volume, reduction="max"), [9.0, 10.0, 11.0])
    # Fewer than 100 voxels per slice: top100 is the mean of all of them.
    np.testing.assert_allclose(slice_scores(volume, reduction="top100"), [4.5, 5.5, 6.5])
    np.testing.assert_allclose(slice_scores(volume, axis=0, reduction="mean"), [2.5, 8.5])
    np.testing.assert_allclose(slice_scores(volume, axis=0, reduction="max"), [5.0, 11.0])


def test_top100_averages_the_100_largest_values_of_a_large_slice():
    rng = np.random.default_rng(4)
    values = rng.permutation(121).reshape(11, 11).astype(float)
    volume = np.stack([values, -values], axis=2)
    # Slice 0 holds 0..120, its 100 largest are 21..120; slice 1 holds -120..0, its largest -99..0.
    np.testing.assert_allclose(slice_scores(volume, reduction="top100"), [70.5, -49.5])


def test_unknown_reduction_raises():
    with pytest.raises(ValueError, match="median"):
        slice_scores(np.zeros((2, 2, 2)), reduction="median")  # type: ignore[arg-type]


def test_slice_labels_mark_slices_with_any_anomalous_voxel():
    labels = np.zeros((2, 2, 3), dtype=np.uint8)
    labels[1, 0, 2] = 4
    np.testing.assert_array_equal(slice_labels(labels), [0, 0, 1])
    np.testing.assert_array_equal(slice_labels(labels, axis=0), [0, 1])


def test_slice_level_metrics_pool_the_slices_of_all_volumes():
    # Two volumes of two slices (along axis 2) of two voxels each.
    scores_a = np.zeros((2, 1, 2))
    scores_a[:, 0, 0], scores_a[:, 0, 1] = [0.0, 0.2], [0.1, 0.9]
    labels_a = np.zeros((2, 1, 2), dtype=np.uint8)
    labels_a[1, 0, 1] = 2
    scores_b = np.zeros((2, 1, 2))
    scores_b[:, 0, 0], scores_b[:, 0, 1] = [0.3, 0.3], [0.0, 0.4]
    labels_b = np.zeros((2, 1, 2), dtype=np.uint8)
    labels_b[0, 0, 0] = 1
    # Pooled slices (score, label): mean (0.1, 0) (0.5, 1) (0.3, 1) (0.2, 0): positives on top;
    # max (0.2, 0) (0.9, 1) (0.3, 1) (0.4, 0): the tiny example again, AP 5/6 and AUROC 3/4;
    # top100 equals mean because slices have fewer than 100 voxels.
    result = slice_level_metrics([scores_a, scores_b], [labels_a, labels_b])
    assert list(result) == ["mean", "max", "top100"]
    assert result["mean"] == pytest.approx({"auroc": 1.0, "ap": 1.0})
    assert result["max"] == pytest.approx({"auroc": 0.75, "ap": 5 / 6})
    assert result["top100"] == pytest.approx({"auroc": 1.0, "ap": 1.0})


def test_slice_level_metrics_without_anomalous_slice_are_nan():
    result = slice_level_metrics([np.ones((2, 2, 3))], [np.zeros((2, 2, 3))])
    assert all(math.isnan(value) for metrics in result.values() for value in metrics.values())


def test_pooled_metrics_equal_metrics_on_the_concatenation():
    rng = np.random.default_rng(5)
    volumes = [_random_volume(rng, shape) for shape in [(6, 5, 4), (3, 7, 5), (4, 4, 4)]]
    items = [(scores, labels, region) for scores, labels, region in volumes[:2]]
    items.append((volumes[2][0], volumes[2][1], None))
    concatenated_scores = np.concatenate([s[r] for s, _, r in items[:2]] + [items[2][0].ravel()])
    concatenated_labels = np.concatenate([lab[r] for _, lab, r in items[:2]] + [items[2][1].ravel()])
    assert pooled_voxel_metrics(items, n_thresholds=50) == voxel_metrics(
        concatenated_scores, concatenated_labels, n_thresholds=50
    )


def test_sample_voxels_is_seeded_uniform_with_replacement():
    first = sample_voxels(1000, seed=7)
    assert first.shape == (10_000,)
    np.testing.assert_array_equal(first, sample_voxels(1000, seed=7))
    assert not np.array_equal(first, sample_voxels(1000, seed=8))
    assert first.min() >= 0 and first.max() < 1000
    assert np.unique(first).size < first.size  # drawn with replacement


def test_sampled_pool_is_reproducible_ignores_region_and_has_10000_voxels_per_volume():
    rng = np.random.default_rng(6)
    volumes = [_random_volume(rng, (20, 20, 10)) for _ in range(3)]
    result = pooled_voxel_metrics(volumes, sample=10_000, seed=11)
    assert result.n_voxels == 30_000
    assert pooled_voxel_metrics(volumes, sample=10_000, seed=11) == result
    assert pooled_voxel_metrics([(s, lab, None) for s, lab, _ in volumes], sample=10_000, seed=11) == result
    assert pooled_voxel_metrics(volumes, sample=10_000, seed=12) != result
    generator = np.random.default_rng(11)
    indices = [sample_voxels(s.size, 10_000, generator) for s, _, _ in volumes]
    expected = voxel_metrics(
        np.concatenate([s.ravel()[i] for (s, _, _), i in zip(volumes, indices, strict=True)]),
        np.concatenate([lab.ravel()[i] for (_, lab, _), i in zip(volumes, indices, strict=True)]),
    )
    assert result == expected


@pytest.mark.parametrize(
    "call",
    [
        lambda s, o: average_precision(s, o),
        lambda s, o: auroc(s, o),
        lambda s, o: dice_curve(s, o),
        lambda s, o: best_dice(s, o),
        lambda s, o: voxel_metrics(s, o),
        lambda s, o: dice_precision_recall(s > 0.5, o),
        lambda s, o: pooled_voxel_metrics([(s, o, None)]),
        lambda s, o: pooled_voxel_metrics([(s, o, None)], sample=10),
        lambda s, o: slice_level_metrics([s], [o]),
        lambda s, o: voxel_metrics(s, np.zeros_like(s), o > 0),
        lambda s, o: dice_precision_recall(s > 0.5, np.zeros_like(s), o > 0),
    ],
)
def test_shape_mismatch_raises_with_both_shapes(call):
    with pytest.raises(ValueError, match=re.escape("(2, 3)") + ".*" + re.escape("(3, 2)")):
        call(np.zeros((2, 3)), np.zeros((3, 2)))


def test_non_finite_scores_raise():
    with pytest.raises(ValueError, match="NaN or infinite"):
        voxel_metrics(np.array([0.1, np.nan]), np.array([0, 1]))
