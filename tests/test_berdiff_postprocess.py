"""The paper's per-slice post-processing (method document §4.4) on hand-made arrays."""

from __future__ import annotations

import numpy as np

from napari_disyre.berdiff.postprocess import remove_small_components, slice_prediction, slice_probability


def test_components_up_to_15_filled_pixels_are_removed_with_8_connectivity():
    mask = np.zeros((40, 40), bool)
    mask[1:5, 1:5] = True  # 16 px: kept
    mask[10:13, 1:6] = True  # 15 px: removed
    mask[20:23, 1:4] = True  # 9 px, touching the next block at one corner only:
    mask[23:26, 4:7] = True  # 8-connected, one component of 18 px: kept
    mask[30:34, 30:34] = True  # a 4x4 ring: 12 px, but 16 once its hole is filled: kept
    mask[31:33, 31:33] = False
    mask[1:4, 30:33] = True  # a 3x3 ring: 8 px, filled 9: removed
    mask[2, 31] = False
    kept = remove_small_components(mask)
    expected = mask.copy()
    expected[10:13, 1:6] = False
    expected[1:4, 30:33] = False
    assert np.array_equal(kept, expected)


def test_probability_median_filters_each_channel_and_clips_to_the_1st_99th_percentiles():
    image = np.zeros((2, 60, 60))
    restoration = np.zeros((2, 60, 60))
    restoration[0, 10:22, 10:22] = 1.0  # squared difference 1 over 144 px
    restoration[1, 40:45, 40:45] = 10.0  # squared difference 100 over 25 px: after the 5x5 median
    # about 21 px, fewer than the top 1 % (36 px), so the 99th percentile is 1 and it clips to 1
    restoration[1, 5, 50] = 30.0  # a single hot pixel: the median filter removes it
    prob = slice_probability(restoration, image)
    assert prob.shape == (60, 60)
    assert prob[15, 15] == 1.0  # without the clip it would be 1/100
    assert prob[42, 42] == 1.0
    assert prob[5, 50] == 0.0
    assert prob[0, 0] == 0.0
    assert set(np.unique(prob)) == {0.0, 1.0}


def test_prediction_thresholds_at_one_half_and_filters_components():
    prob = np.zeros((30, 30))
    prob[2:8, 2:8] = 0.9  # 36 px: kept
    prob[20:23, 20:23] = 0.9  # 9 px: removed
    prob[12:18, 12:18] = 0.5  # not above 0.5
    pred = slice_prediction(prob)
    expected = np.zeros((30, 30), bool)
    expected[2:8, 2:8] = True
    assert np.array_equal(pred, expected)


def test_a_perfect_restoration_gives_an_empty_map():
    image = np.random.default_rng(0).random((1, 20, 20))
    prob = slice_probability(image, image)
    assert not prob.any()
    assert not slice_prediction(prob).any()
