"""DAG synthetic anomalies: shapes, placement, foreign patch interpolation, bias, level -> timestep."""

from __future__ import annotations

import numpy as np
import pytest

from napari_disyre.disyre.schedule import Schedule
from napari_disyre.training.corruption import (
    BIAS_CODEBOOK,
    Corruption,
    bias_corrupt,
    blob_mask,
    dag_corrupt,
    disc_mask,
    foreign_patch,
    foreign_patch_interpolation,
    normalise_foreign,
    place_shape,
    quantise,
    random_location,
    random_shape,
    rectangle_mask,
    select_bins,
)


def phantom(shape: tuple[int, int] = (128, 112), phase: float = 0.0) -> np.ndarray:
    """An elliptical 'brain' with striped texture in [0.2, 0.9] on an exact-zero background."""
    rows, cols = np.indices(shape, dtype=np.float64)
    inside = (rows / shape[0] - 0.5) ** 2 + (cols / shape[1] - 0.5) ** 2 < 0.42**2
    texture = 0.2 + 0.7 * np.sin(cols / 5.0 + rows / 9.0 + phase) ** 2
    return np.where(inside, texture, 0.0).astype(np.float32)


# -- shapes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("patch", [(64, 64), (48, 40)])
def test_random_shape_is_a_nonempty_soft_mask_of_patch_size(patch):
    rng = np.random.default_rng(0)
    for _ in range(40):
        shape = random_shape(rng, patch)
        assert shape.shape == patch
        assert shape.dtype == np.float32
        assert shape.min() >= 0.0 and shape.max() <= 1.0
        assert shape.max() > 0.0


def test_random_shape_blurs_some_shapes_and_leaves_others_binary():
    rng = np.random.default_rng(1)
    soft = [not np.isin(random_shape(rng), (0.0, 1.0)).all() for _ in range(60)]
    assert 0.5 < np.mean(soft) < 0.9  # blurred with probability 0.7


def test_rectangle_sides_are_in_range_and_untilted_rectangles_are_solid():
    rng = np.random.default_rng(2)
    for _ in range(40):
        rect = rectangle_mask(rng)
        assert set(np.unique(rect)) <= {0.0, 1.0}
        rows, cols = np.nonzero(rect)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        if rect.sum() == height * width:  # not tilted: a solid box with sides in [10, 44]
            assert 10 <= height <= 44 and 10 <= width <= 44
        else:  # tilted by at most 15 degrees: the bounding box grows by at most sin(15) * 44 per side
            assert height <= 44 + 12 and width <= 44 + 12


def test_disc_diameter_and_centre_margin():
    rng = np.random.default_rng(3)
    for _ in range(40):
        disc = disc_mask(rng)
        rows, cols = np.nonzero(disc)
        diameter = 2 * np.sqrt(disc.sum() / np.pi)
        assert 9 <= diameter <= 45
        # The disc's centre (mean of its unclipped pixels) keeps a 10-pixel margin.
        if rows.min() > 0 and cols.min() > 0 and rows.max() < 63 and cols.max() < 63:
            assert 9.5 <= rows.mean() + 0.5 <= 54.5 and 9.5 <= cols.mean() + 0.5 <= 54.5


def test_blob_is_nonempty_and_of_comparable_area():
    rng = np.random.default_rng(4)
    areas = np.array([blob_mask(rng).sum() for _ in range(40)])
    assert areas.min() >= np.pi * 5 * 5 * 0.8
    assert areas.max() <= 44 * 44


def test_too_small_patch_is_refused():
    with pytest.raises(ValueError, match="at least 30"):
        random_shape(np.random.default_rng(0), (20, 64))


# -- placement --------------------------------------------------------------------------------------
def test_random_location_is_foreground_with_room_for_the_patch():
    image = phantom()
    rng = np.random.default_rng(5)
    for _ in range(50):
        cy, cx = random_location(rng, image)
        assert image[cy, cx] > 0
        assert 32 <= cy <= 128 - 32 and 32 <= cx <= 112 - 32


def test_random_location_falls_back_to_a_uniform_centre_without_usable_foreground():
    image = np.zeros((100, 90), np.float32)
    image[:5, :5] = 0.5  # foreground only near the border
    rng = np.random.default_rng(6)
    centres = np.array([random_location(rng, image) for _ in range(200)])
    assert centres[:, 0].min() >= 32 and centres[:, 0].max() <= 100 - 32
    assert centres[:, 1].min() >= 32 and centres[:, 1].max() <= 90 - 32
    assert len(np.unique(centres, axis=0)) > 50


def test_place_shape_pastes_at_centre_minus_half_patch():
    shape = np.arange(1, 13, dtype=np.float32).reshape(4, 3)
    out = place_shape(shape, (5, 6), (10, 12))
    assert out.shape == (10, 12) and out.dtype == np.float32
    np.testing.assert_array_equal(out[3:7, 5:8], shape)
    assert out.sum() == shape.sum()
    with pytest.raises(ValueError, match="does not fit"):
        place_shape(shape, (1, 6), (10, 12))


def test_mask_and_corruption_stay_out_of_the_background():
    image, foreign = phantom(), phantom(phase=1.0)
    for seed in range(25):
        result = dag_corrupt(np.random.default_rng(seed), image, foreign)
        assert isinstance(result, Corruption)
        assert np.all(result.mask[image == 0] == 0)
        assert np.all(result.image[image == 0] == 0)
        assert result.image.dtype == np.float32 and result.mask.dtype == np.float32
        assert result.image.min() >= 0 and result.image.max() <= 1
        assert 0.0 <= result.level <= 1.0


def test_dag_corrupt_chains_shape_location_fpi_and_bias():
    """Reproduce dag_corrupt from its pieces with the same seed: the order of the steps is as documented."""
    image, foreign = phantom(), phantom(phase=1.0)
    for seed in range(5):
        result = dag_corrupt(np.random.default_rng(seed), image, foreign)
        rng = np.random.default_rng(seed)
        shape = random_shape(rng)
        centre = random_location(rng, image)
        mask = place_shape(shape, centre, image.shape) * (image > 0)
        fp_big = place_shape(foreign_patch(rng, foreign), centre, image.shape)
        textured, a_texture = foreign_patch_interpolation(image, fp_big, mask, rng.uniform())
        expected, a_bias = bias_corrupt(rng, textured, mask, rng.uniform())
        np.testing.assert_array_equal(result.mask, mask)
        np.testing.assert_array_equal(result.image, expected)
        assert result.level == max(a_texture, a_bias)


# -- foreign patch interpolation --------------------------------------------------------------------
def test_foreign_patch_is_a_crop_inside_the_foreground_bounding_box():
    foreign = np.zeros((200, 180), np.float32)
    values = (np.arange(100 * 90, dtype=np.float32).reshape(100, 90) + 1) / (100 * 90)
    foreign[50:150, 40:130] = values
    rng = np.random.default_rng(7)
    for _ in range(20):
        fp = foreign_patch(rng, foreign, (64, 64))
        assert fp.shape == (64, 64)
        assert np.all(fp > 0)  # the box is larger than the patch, so the crop is all foreground
        top, left = np.argwhere(values == fp[0, 0])[0]
        np.testing.assert_array_equal(fp, values[top : top + 64, left : left + 64])


def test_normalise_foreign_maps_fp_range_to_source_range_under_the_mask():
    image = np.array([[0.0, 0.3, 0.5], [0.7, 0.9, 0.0]], np.float32)
    mask = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]], np.float32)
    fp = np.array([[0.9, 0.2, 0.4], [0.6, 0.1, 0.8]], np.float32)
    out = normalise_foreign(fp, image, mask)
    # Under the mask fp spans [0.2, 0.6] and the image [0.3, 0.7]: v -> (v - 0.2) / 0.401 * 0.4 + 0.3.
    expected = np.array([[0.9, 0.3, 0.3 + 0.2 / 0.401 * 0.4], [0.3 + 0.4 / 0.401 * 0.4, 0.1, 0.8]])
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_normalise_foreign_clips_to_unit_range():
    image = np.array([[0.5, 0.9]], np.float32)
    mask = np.ones((1, 2), np.float32)
    fp = np.array([[2.0, -1.0]], np.float32)  # outside the mask nothing changes, but all is clipped
    out = normalise_foreign(fp, image, np.array([[0.0, 0.0]], np.float32))
    np.testing.assert_array_equal(out, [[1.0, 0.0]])
    np.testing.assert_allclose(normalise_foreign(fp, image, mask), [[0.5 + 3 / 3.001 * 0.4, 0.5]], atol=1e-6)


def test_alpha_one_replaces_the_slice_under_a_binary_mask_by_the_normalised_patch():
    image = np.array([[0.2, 0.4, 0.6], [0.8, 0.5, 0.0]], np.float32)
    mask = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    fp = np.array([[0.1, 0.3, 0.9], [0.5, 0.9, 0.9]], np.float32)
    out, level = foreign_patch_interpolation(image, fp, mask, 1.0)
    # fp under the mask spans [0.1, 0.5], the image [0.2, 0.8]: v -> (v - 0.1) / 0.401 * 0.6 + 0.2.
    expected = np.array([[0.2, 0.2 + 0.2 / 0.401 * 0.6, 0.6], [0.2 + 0.4 / 0.401 * 0.6, 0.5, 0.0]])
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert level == 1.0


def test_partial_alpha_blends_linearly_and_reports_alpha():
    image = np.array([[0.2, 0.4]], np.float32)
    mask = np.array([[1.0, 0.5]], np.float32)
    fp = np.array([[0.3, 0.9]], np.float32)
    out, level = foreign_patch_interpolation(image, fp, mask, 0.5)
    fp_norm = (np.array([0.3, 0.9]) - 0.3) / 0.601 * 0.2 + 0.2
    expected = np.array([0.2, 0.4]) * (1 - np.array([1.0, 0.5]) * 0.5) + fp_norm * np.array([1.0, 0.5]) * 0.5
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    assert level == 0.5


def test_alpha_zero_leaves_the_slice_unchanged_with_level_zero():
    image, foreign = phantom(), phantom(phase=2.0)
    for seed in range(5):
        result = dag_corrupt(np.random.default_rng(seed), image, foreign, alpha=0.0)
        np.testing.assert_array_equal(result.image, image)
        assert result.level == 0.0
        assert Schedule().level_to_timestep(result.level)[0] == 99


def test_alpha_one_gives_level_one_and_timestep_zero():
    image, foreign = phantom(), phantom(phase=2.0)
    result = dag_corrupt(np.random.default_rng(8), image, foreign, alpha=1.0)
    assert result.level == 1.0
    assert Schedule().level_to_timestep(result.level)[0] == 0
    assert not np.array_equal(result.image, image)


def test_level_with_fixed_alpha_is_alpha_because_the_bias_cannot_exceed_its_amplitude():
    image, foreign = phantom(), phantom(phase=2.0)
    for seed in range(10):
        result = dag_corrupt(np.random.default_rng(seed), image, foreign, alpha=0.3)
        assert result.level == pytest.approx(0.3, abs=1e-6)
        changed = result.image != image
        assert np.all(result.mask[changed] > 0)


# -- bias -------------------------------------------------------------------------------------------
def test_quantise_picks_the_nearest_codebook_entry():
    image = np.array([[0.0, 0.19, 0.2, 0.5], [0.7, 0.86, 1.0, 0.62]], np.float32)
    np.testing.assert_array_equal(quantise(image), [[0, 0, 1, 2], [3, 4, 4, 2]])
    np.testing.assert_array_equal(quantise(BIAS_CODEBOOK), np.arange(5))


def test_select_bins_selects_all_bins_when_the_draw_selects_none():
    bins = np.array([[0, 1], [2, 3]])
    one_pixel = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)  # p(bin 0) = 1/1001, others 0
    selections = [select_bins(np.random.default_rng(seed), bins, one_pixel) for seed in range(20)]
    assert all(s.all() for s in selections)


def test_select_bins_favours_the_bins_common_under_the_shape():
    bins = np.zeros((100, 100), dtype=int)
    bins[:, 95:] = 4  # 500 pixels in bin 4, 9500 in bin 0
    mask = np.ones((100, 100), np.float32)
    rng = np.random.default_rng(9)
    chosen = np.array([select_bins(rng, bins, mask) for _ in range(400)])
    p0, p4 = 9500 / 11000, 500 / 11000
    fallback = (1 - p0) * (1 - p4)  # nothing drawn: every bin is selected
    assert abs(chosen[:, 0].mean() - (p0 + fallback)) < 0.03
    assert abs(chosen[:, 4].mean() - (p4 + fallback)) < 0.05
    assert np.all(chosen[:, 1:4] == chosen[:, 1:2])  # empty bins only come in through the fallback


def test_bias_changes_only_the_shape_clips_and_reports_the_actual_change():
    image = phantom((64, 64))
    mask = np.zeros_like(image)
    mask[20:40, 24:44] = 1.0
    clipped = 0
    for seed in range(10):
        out, level = bias_corrupt(np.random.default_rng(seed), image, mask, 0.4)
        assert out.dtype == np.float32
        assert np.all(out[mask == 0] == image[mask == 0])
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert level == float(np.abs(out - image).max())
        assert 0.0 < level <= 0.4 + 1e-6
        clipped += np.count_nonzero(((out == 1.0) & (image > 0.6)) | ((out == 0.0) & (image < 0.4)))
    assert clipped > 0  # the phantom spans [0.2, 0.9], so a 0.4 shift clips somewhere


def test_bias_shifts_a_single_pixel_by_the_full_amplitude():
    image = np.full((9, 9), 0.5, np.float32)
    mask = np.zeros_like(image)
    mask[4, 4] = 1.0  # one pixel: all bins selected, so the smoothed bin mask is 1 everywhere
    out, level = bias_corrupt(np.random.default_rng(10), image, mask, 0.25)
    assert out[4, 4] in (np.float32(0.25), np.float32(0.75))
    assert level == pytest.approx(0.25)
    out[4, 4] = 0.5
    np.testing.assert_array_equal(out, image)


def test_bias_level_is_limited_by_the_clip():
    image = np.full((9, 9), 0.9, np.float32)
    mask = np.zeros_like(image)
    mask[4, 4] = 1.0
    results = [bias_corrupt(np.random.default_rng(seed), image, mask, 0.5) for seed in range(10)]
    levels = sorted({round(level, 5) for _, level in results})
    assert levels == [0.1, 0.5]  # +0.5 clips at 1 (a change of 0.1), -0.5 does not


# -- level -> timestep ------------------------------------------------------------------------------
def test_levels_map_to_timesteps_through_the_schedule():
    schedule = Schedule()
    levels = np.array([0.0, 1.0, schedule.sqrt_alphas_cumprod[37]])
    np.testing.assert_array_equal(schedule.level_to_timestep(levels), [99, 0, 37])


# -- determinism ------------------------------------------------------------------------------------
def test_same_seed_gives_identical_corruption_and_different_seeds_differ():
    image, foreign = phantom(), phantom(phase=3.0)
    a = dag_corrupt(np.random.default_rng(11), image, foreign)
    b = dag_corrupt(np.random.default_rng(11), image, foreign)
    c = dag_corrupt(np.random.default_rng(12), image, foreign)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.level == b.level
    assert not np.array_equal(a.mask, c.mask)


def test_dag_corrupt_rejects_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="2D slice"):
        dag_corrupt(rng, np.zeros((4, 64, 64)), phantom())
    with pytest.raises(ValueError, match="alpha"):
        dag_corrupt(rng, phantom(), phantom(), alpha=1.5)
    with pytest.raises(ValueError, match="smaller than the anomaly patch"):
        dag_corrupt(rng, phantom((40, 40)), phantom())
