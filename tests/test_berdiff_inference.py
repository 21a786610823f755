"""Masked anomaly inference (method document §4.1): mask growth with P, x0 mixing, the L network
calls with the official off-by-one, the unmasked last step, per-slice masks, seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_disyre.berdiff.bernoulli import BernoulliSchedule, posterior_probability  # noqa: E402
from napari_disyre.berdiff.inference import (  # noqa: E402
    InferenceSettings,
    LatentState,
    SliceNoise,
    restore_codes,
    restore_slices,
    reverse_step,
)
from napari_disyre.errors import DisyreError, InputError  # noqa: E402

from .berdiff_tiny import smooth_slices, tiny_networks  # noqa: E402

# betas 0.1 .. 0.5: alphas 0.9, 0.8, 0.7, 0.6, 0.5; abar 0.9, 0.72, 0.504, 0.3024, 0.1512
FIVE = BernoulliSchedule(steps=5, beta_start=0.1, beta_end=0.5)


class RecordingNoise:
    """Stands in for SliceNoise: records each probability it is asked to sample and returns 1s."""

    def __init__(self) -> None:
        self.asked: list[torch.Tensor] = []

    def bernoulli(self, p: torch.Tensor, start: int = 0) -> torch.Tensor:
        self.asked.append(p.clone())
        return torch.ones_like(p)


def bits(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, len(values), 1, 1)


def test_reverse_step_grows_the_mask_and_mixes_x0_inside_it():
    state = LatentState(code=bits(1, 0, 1, 0), x=bits(1, 1, 0, 0), mask=bits(0, 0, 0, 1).bool())
    noise = RecordingNoise()
    flip = bits(0.7, 0.2, 0.9, 0.1)
    mixed = reverse_step(lambda x, t: flip, FIVE, state, 1, 0.6, noise)
    # x0 = |x - flip| = 0.3, 0.8, 0.9, 0.1; flip > 0.6 at bits 0 and 2; bit 3 stays masked (union)
    assert state.mask.flatten().tolist() == [True, False, True, True]
    # inside the mask the prediction, outside the slice's own code (bit 1: code 0, not x0 = 0.8)
    assert mixed.flatten().tolist() == pytest.approx([0.3, 0.0, 0.9, 0.1])
    # x_{t-1} is drawn from the posterior of the MIXED x0
    (asked,) = noise.asked
    assert torch.allclose(asked, posterior_probability(FIVE, mixed, bits(1, 1, 0, 0), 1))
    # element 0 by hand: theta1 = 0.1 * (0.9*0.7 + 0.05), theta2 = 0.9 * (0.9*0.3 + 0.05)
    assert asked.flatten()[0].item() == pytest.approx(0.288 / (0.288 + 0.068))
    assert state.x.flatten().tolist() == [1, 1, 1, 1]


def test_threshold_is_strict_and_a_higher_p_masks_fewer_bits():
    flip = bits(0.5, 0.55, 0.65, 0.95)
    masks = {}
    for p in (0.5, 0.6, 0.9):
        state = LatentState(code=bits(0, 0, 0, 0), x=bits(1, 1, 1, 1), mask=bits(0, 0, 0, 0).bool())
        reverse_step(lambda x, t: flip, FIVE, state, 2, p, RecordingNoise())
        masks[p] = state.mask.flatten().tolist()
    assert masks == {
        0.5: [False, True, True, True],
        0.6: [False, False, True, True],
        0.9: [False, False, False, True],
    }


def test_mask_is_per_slice_not_from_batch_element_zero():
    state = LatentState(
        code=torch.zeros(2, 2, 1, 1), x=torch.ones(2, 2, 1, 1), mask=torch.zeros(2, 2, 1, 1).bool()
    )
    flip = torch.tensor([[0.9, 0.1], [0.1, 0.9]]).reshape(2, 2, 1, 1)
    reverse_step(lambda x, t: flip, FIVE, state, 1, 0.5, RecordingNoise())
    assert state.mask.reshape(2, 2).tolist() == [[True, False], [False, True]]


def test_last_step_returns_the_unmasked_real_valued_x0_without_sampling():
    state = LatentState(code=bits(1, 1, 1), x=bits(1, 0, 1), mask=bits(0, 0, 0).bool())
    noise = RecordingNoise()
    out = reverse_step(lambda x, t: bits(0.8, 0.3, 0.1), FIVE, state, 0, 0.5, noise)
    assert out.flatten().tolist() == pytest.approx([0.2, 0.3, 0.9])  # bit 0 not replaced by code 1
    assert noise.asked == []
    assert not state.mask.any()


def test_noise_level_l_means_noise_at_index_l_then_l_network_calls():
    calls: list[int] = []

    def model(x, t):
        calls.append(t)
        return torch.full_like(x, 0.2)

    noise = RecordingNoise()
    code = bits(1, 0)
    steps = list(restore_codes(model, FIVE, code, InferenceSettings(noise_level=3, threshold=0.5), noise))
    assert calls == [2, 1, 0]  # t = L itself is never passed to the network
    assert [t for t, _, _ in steps] == [2, 1, 0]
    # x_L ~ Bernoulli(abar[3] * code) with abar[3] = 0.9 * 0.8 * 0.7 * 0.6
    assert noise.asked[0].flatten().tolist() == pytest.approx([0.3024, 0.0])
    assert len(noise.asked) == 1 + 2  # x_L, then one posterior draw for t = 2 and t = 1


def test_the_symmetric_forward_process_noises_both_bit_values():
    sym = BernoulliSchedule(steps=5, beta_start=0.1, beta_end=0.5, forward="symmetric")
    noise = RecordingNoise()
    next(
        restore_codes(lambda x, t: torch.full_like(x, 0.2), sym, bits(1, 0), InferenceSettings(3, 0.5), noise)
    )
    # abar[3] x0 + (1 - abar[3]) / 2 with abar[3] = 0.3024
    assert noise.asked[0].flatten().tolist() == pytest.approx([0.3024 + 0.3488, 0.3488])


def test_settings_are_checked_against_the_schedule():
    with pytest.raises(DisyreError, match="noise level"):
        InferenceSettings(noise_level=5).check(FIVE)
    with pytest.raises(DisyreError, match="Bernoulli diffusion settings: threshold 1.5: input should be less than or equal to 1"):
        InferenceSettings(noise_level=2, threshold=1.5).check(FIVE)


def test_slice_noise_does_not_depend_on_batching():
    p = torch.full((3, 2, 4, 4), 0.5)
    whole = SliceNoise(7, 3).bernoulli(p)
    split = SliceNoise(7, 3)
    parts = torch.cat([split.bernoulli(p[:1], 0), split.bernoulli(p[1:], 1)])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, SliceNoise(8, 3).bernoulli(p))


def run(slices, ae, unet, settings, **kwargs):
    gen = restore_slices(slices, ae, unet, BernoulliSchedule(), settings, **kwargs)
    progress = []
    while True:
        try:
            progress.append(next(gen))
        except StopIteration as stop:
            return stop.value, progress


def test_restore_slices_maps_steps_and_determinism():
    ae, unet = tiny_networks()
    slices = smooth_slices(3)
    settings = InferenceSettings(noise_level=5, threshold=0.6, seed=3)
    result, progress = run(slices, ae, unet, settings, batch_size=2, restoration_every=2)
    assert result.anomaly_map.shape == (3, 16, 16) and result.flip_mask.shape == (3, 16, 16)
    assert result.steps_run == 5
    assert result.timesteps == [3, 1, 0]  # calls 2 and 4, then the last (t = 0)
    assert np.array_equal(result.restoration, result.restorations[-1])
    assert result.restoration.min() >= 0 and result.restoration.max() <= 1
    expected = ((result.restoration - slices[:, None]) ** 2).sum(axis=1)
    assert np.allclose(result.anomaly_map, expected)
    assert [p.restoration is not None for p in progress].count(True) == 3
    assert progress[-1].fraction == pytest.approx(1.0)
    # same seed, other batch size: the same random draws (identical mask), maps equal up to the
    # float rounding of batched convolutions; other seed: different draws
    again, _ = run(slices, ae, unet, settings, batch_size=1, restoration_every=0)
    assert np.array_equal(again.flip_mask, result.flip_mask)
    assert np.allclose(again.anomaly_map, result.anomaly_map, rtol=1e-4, atol=1e-6)
    repeat, _ = run(slices, ae, unet, settings, batch_size=2, restoration_every=0)
    assert np.array_equal(repeat.anomaly_map, result.anomaly_map)
    other, _ = run(slices, ae, unet, InferenceSettings(noise_level=5, threshold=0.6, seed=4))
    assert not np.array_equal(other.anomaly_map, result.anomaly_map)


def test_flip_mask_in_image_space_is_the_masked_fraction_per_latent_position():
    ae, unet = tiny_networks()
    slices = smooth_slices(2)
    nothing, _ = run(slices, ae, unet, InferenceSettings(noise_level=3, threshold=1.0))
    everything, _ = run(slices, ae, unet, InferenceSettings(noise_level=3, threshold=0.0))
    assert not nothing.flip_mask.any()
    assert np.all(everything.flip_mask == 1.0)
    some, _ = run(slices, ae, unet, InferenceSettings(noise_level=3, threshold=0.6))
    blocks = some.flip_mask.reshape(2, 8, 2, 8, 2)  # constant over each 2x2 pixel block
    assert np.all(blocks == blocks[:, :, :1, :, :1])
    assert set(np.unique(some.flip_mask)) <= {0.0, 0.25, 0.5, 0.75, 1.0}  # k of 4 bits


def test_bad_slices_are_refused():
    ae, unet = tiny_networks()
    with pytest.raises(InputError, match="multiple of 2"):
        run(np.zeros((1, 15, 16), np.float32), ae, unet, InferenceSettings(noise_level=2))
    with pytest.raises(InputError, match="channel|expected slices"):
        run(np.zeros((1, 3, 16, 16), np.float32), ae, unet, InferenceSettings(noise_level=2))


def test_the_map_against_the_reconstruction_cancels_the_autoencoders_own_error():
    """reference="reconstruction": the same draws and restoration as the official map, compared with
    the decoded code the restoration started from (the slice's first draw of its own generator)."""
    ae, unet = tiny_networks()
    slices = smooth_slices(3)
    official, _ = run(slices, ae, unet, InferenceSettings(noise_level=4, seed=2), batch_size=2)
    settings = InferenceSettings(noise_level=4, seed=2, reference="reconstruction")
    against, _ = run(slices, ae, unet, settings, batch_size=2)
    assert np.array_equal(against.restoration, official.restoration)
    with torch.no_grad():
        p = ae.bit_probabilities(torch.from_numpy(slices[:, None]))
        code = SliceNoise(2, 3).bernoulli(p)  # each slice's first draw: its code
        reconstruction = ae.decode(code).clamp(0, 1).numpy()
    expected = ((against.restoration - reconstruction) ** 2).sum(axis=1)
    np.testing.assert_allclose(against.anomaly_map, expected, rtol=1e-4, atol=1e-6)  # batched-conv rounding
    assert np.allclose(official.anomaly_map, ((official.restoration - slices[:, None]) ** 2).sum(axis=1))
    assert not np.allclose(against.anomaly_map, official.anomaly_map)
    with pytest.raises(DisyreError, match="reference"):
        InferenceSettings(reference="recon")


def test_fingerprints_and_saved_map_records_of_the_official_map_are_as_before_the_option():
    """A model's fingerprint and a saved map's record hold the settings without the official map's
    reference, so maps saved before ``--map-reference`` existed are still reused, not refused."""
    assert InferenceSettings().record() == {"noise_level": 100, "threshold": 0.6, "sample_code": True, "seed": 0}
    assert InferenceSettings(reference="reconstruction").record()["reference"] == "reconstruction"
