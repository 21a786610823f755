"""Training augmentations: crop size, value range, exact-zero background, identity when switched off."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_disyre.training.augment import (
    DEFAULT_PROBABILITIES,
    AugmentationProbabilities,
    augment_slice,
    intensity_augment,
    mirror,
    pad_to,
    random_crop,
    spatial_augment,
)

OFF = AugmentationProbabilities.constant(0.0)
ALL = AugmentationProbabilities.constant(1.0)


def phantom(shape: tuple[int, int] = (120, 104)) -> np.ndarray:
    """An elliptical 'brain' with texture in [0.2, 0.9] on an exact-zero background."""
    rows, cols = np.indices(shape, dtype=np.float64)
    inside = (rows / shape[0] - 0.5) ** 2 + (cols / shape[1] - 0.5) ** 2 < 0.4**2
    texture = 0.2 + 0.7 * np.sin(cols / 6.0 + rows / 11.0) ** 2
    return np.where(inside, texture, 0.0).astype(np.float32)


def centred_disc(size: int = 81, radius: float = 20.0) -> np.ndarray:
    rows, cols = np.indices((size, size)) - (size - 1) / 2
    return (rows**2 + cols**2 <= radius**2).astype(np.float32)


def only(**probabilities: float) -> AugmentationProbabilities:
    return dataclasses.replace(OFF, **probabilities)


def test_default_probabilities_are_the_official_ones():
    assert dataclasses.asdict(DEFAULT_PROBABILITIES) == {
        "elastic": 0.1,
        "rotation": 0.1,
        "scale": 0.1,
        "mirror": 0.5,
        "brightness": 0.15,
        "gamma": 0.15,
        "inverted_gamma": 0.15,
        "noise": 0.15,
        "blur": 0.15,
    }


# -- whole chain ------------------------------------------------------------------------------------
@pytest.mark.parametrize("probabilities", [DEFAULT_PROBABILITIES, ALL], ids=["default", "all-on"])
@pytest.mark.parametrize("shape", [(120, 104), (70, 50)], ids=["larger", "smaller"])
def test_augmented_slice_has_crop_size_and_unit_range(probabilities, shape):
    image = phantom(shape)
    rng = np.random.default_rng(0)
    for _ in range(8):
        out = augment_slice(rng, image, (96, 96), probabilities)
        assert out.shape == (96, 96) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert np.count_nonzero(out) > 0


def test_chain_order_and_background_stays_exactly_zero():
    """augment_slice = spatial, crop, mirror, intensity; background after the spatial step ends at 0."""
    image = phantom()
    for seed in range(6):
        out = augment_slice(np.random.default_rng(seed), image, (96, 96), ALL)
        rng = np.random.default_rng(seed)
        geometric = mirror(rng, random_crop(rng, spatial_augment(rng, image, ALL), (96, 96)), ALL.mirror)
        np.testing.assert_array_equal(out, intensity_augment(rng, geometric, ALL))
        assert np.all(out[geometric == 0] == 0)
        assert np.any(geometric == 0)  # the crops do contain background


def test_everything_off_is_the_identity():
    image = phantom()
    out = augment_slice(np.random.default_rng(1), image, image.shape, OFF)
    np.testing.assert_array_equal(out, image)


def test_same_seed_same_output():
    image = phantom()
    a = augment_slice(np.random.default_rng(2), image, probabilities=ALL)
    b = augment_slice(np.random.default_rng(2), image, probabilities=ALL)
    c = augment_slice(np.random.default_rng(3), image, probabilities=ALL)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# -- spatial ----------------------------------------------------------------------------------------
def test_spatial_off_returns_an_unchanged_copy():
    image = phantom()
    out = spatial_augment(np.random.default_rng(0), image, OFF)
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_rotation_leaves_a_centred_disc_a_disc():
    disc = centred_disc()
    rng = np.random.default_rng(4)
    for _ in range(5):
        out = spatial_augment(rng, disc, only(rotation=1.0))
        assert out.min() >= 0.0 and out.max() <= 1.0
        rows, cols = np.indices(disc.shape) - 40
        differs = np.abs(out - disc) > 1e-5
        assert np.all(np.abs(np.hypot(rows, cols)[differs] - 20.0) <= 1.5)  # only the edge, by interpolation
        assert out.sum() == pytest.approx(disc.sum(), rel=0.02)


def test_rotation_turns_an_off_centre_spot_by_at_most_15_degrees():
    image = np.zeros((81, 81), np.float32)
    image[40, 70] = 1.0  # 30 pixels right of the centre
    rng = np.random.default_rng(5)
    angles = []
    for _ in range(20):
        out = spatial_augment(rng, image, only(rotation=1.0))
        rows, cols = np.indices(out.shape) - 40
        weight = out.sum()
        if weight > 0:
            angles.append(np.degrees(np.arctan2((rows * out).sum() / weight, (cols * out).sum() / weight)))
    assert len(angles) >= 15
    assert np.max(np.abs(angles)) <= 15.5
    assert np.ptp(angles) > 5


def test_scaling_changes_a_centred_disc_radius_within_range():
    disc = centred_disc()
    rng = np.random.default_rng(6)
    radii = []
    for _ in range(10):
        out = spatial_augment(rng, disc, only(scale=1.0))
        radii.append(np.sqrt(out.sum() / np.pi))
    assert min(radii) >= 0.74 * 20 and max(radii) <= 1.26 * 20
    assert np.ptp(radii) > 2


def test_elastic_deformation_moves_pixels_by_a_few_pixels_only():
    disc = centred_disc(radius=15.0)
    rng = np.random.default_rng(7)
    changed = 0
    for _ in range(5):
        out = spatial_augment(rng, disc, only(elastic=1.0))
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert np.all(out[:10] == 0) and np.all(out[:, -10:] == 0)  # displacements are a few pixels
        changed += not np.array_equal(out, disc)
    assert changed >= 4


# -- crop and mirror --------------------------------------------------------------------------------
def test_pad_to_pads_symmetrically_with_zeros():
    image = np.ones((50, 61), np.float32)
    out = pad_to(image, (96, 64))
    assert out.shape == (96, 64)
    np.testing.assert_array_equal(out[23:73, 1:62], image)
    assert out.sum() == image.sum()


def test_crop_of_a_small_slice_is_the_padded_slice():
    image = phantom((50, 60))
    out = random_crop(np.random.default_rng(8), image, (96, 96))
    np.testing.assert_array_equal(out[23:73, 18:78], image)
    assert out.sum() == pytest.approx(image.sum())


def test_crop_contains_foreground_and_is_a_window_of_the_slice():
    image = np.zeros((200, 180), np.float32)
    image[5:15, 160:170] = np.linspace(0.1, 1.0, 100, dtype=np.float32).reshape(10, 10)  # a small corner spot
    rng = np.random.default_rng(9)
    for _ in range(20):
        out = random_crop(rng, image, (96, 96))
        assert out.shape == (96, 96)
        assert np.count_nonzero(out) > 0
        top = np.argwhere(image == out[np.nonzero(out)][0])[0] - np.argwhere(out)[0]
        np.testing.assert_array_equal(out, image[top[0] : top[0] + 96, top[1] : top[1] + 96])


def test_crop_without_foreground_still_has_crop_size():
    image = np.zeros((150, 150), np.float32)
    out = random_crop(np.random.default_rng(10), image, (96, 96))
    assert out.shape == (96, 96) and not out.any()


def test_mirror_flips_each_axis_when_forced():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(mirror(np.random.default_rng(0), image, 1.0), image[::-1, ::-1])
    np.testing.assert_array_equal(mirror(np.random.default_rng(0), image, 0.0), image)
    flips = {mirror(np.random.default_rng(seed), image, 0.5)[0, 0] for seed in range(30)}
    assert flips == {0.0, 3.0, 8.0, 11.0}  # all four corner combinations occur


# -- intensity --------------------------------------------------------------------------------------
def test_intensity_off_is_the_identity():
    image = phantom()
    np.testing.assert_array_equal(intensity_augment(np.random.default_rng(0), image, OFF), image)


def test_brightness_multiplies_the_foreground_by_one_factor():
    image = phantom() * 0.8
    rng = np.random.default_rng(11)
    for _ in range(5):
        out = intensity_augment(rng, image, only(brightness=1.0))
        foreground = image > 0
        ratio = out[foreground] / image[foreground]
        assert ratio.min() >= 0.9 - 1e-6 and ratio.max() <= 1.1 + 1e-6
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
        assert np.all(out[~foreground] == 0)


@pytest.mark.parametrize("inverted", [False, True])
def test_gamma_applies_one_exponent_in_range(inverted):
    image = phantom()
    foreground = image > 0
    rng = np.random.default_rng(12)
    gammas = []
    for _ in range(10):
        out = intensity_augment(rng, image, only(inverted_gamma=1.0) if inverted else only(gamma=1.0))
        x, y = image[foreground].astype(np.float64), out[foreground].astype(np.float64)
        if inverted:
            x, y = 1 - x, 1 - y
        gamma = np.log(y) / np.log(x)
        np.testing.assert_allclose(gamma, np.median(gamma), rtol=1e-3)
        gammas.append(np.median(gamma))
        assert np.all(out[~foreground] == 0)
    assert 0.5 <= min(gammas) < 1.0 < max(gammas) <= 2.0


def test_noise_changes_only_the_foreground_with_bounded_variance():
    image = phantom()
    foreground = image > 0
    rng = np.random.default_rng(13)
    for _ in range(5):
        out = intensity_augment(rng, image, only(noise=1.0))
        assert not np.array_equal(out, image)
        assert np.all(out[~foreground] == 0)
        assert out.min() >= 0 and out.max() <= 1
        residual = (out - image)[foreground & (image > 0.3) & (image < 0.7)]  # away from the clip
        assert residual.var() <= 0.05 * 1.1


def test_blur_smooths_the_foreground_and_keeps_the_background_zero():
    image = phantom()
    foreground = image > 0
    out = intensity_augment(np.random.default_rng(14), image, only(blur=1.0))
    assert np.all(out[~foreground] == 0)
    inner = np.zeros_like(foreground)
    inner[30:90, 30:74] = True
    assert (
        np.abs(np.diff(out[inner].reshape(60, 44), axis=1)).mean()
        < np.abs(np.diff(image[inner].reshape(60, 44), axis=1)).mean()
    )


def test_everything_on_keeps_unit_range_and_zero_background():
    image = phantom()
    rng = np.random.default_rng(15)
    for _ in range(10):
        out = intensity_augment(rng, image, ALL)
        assert out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert np.all(out[image == 0] == 0)
