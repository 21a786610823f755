"""The restoration engine equals the documented per-window equations, whatever the batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_disyre.disyre.engine import RestorationSettings, restore
from napari_disyre.disyre.schedule import Schedule
from napari_disyre.restoration import run_to_end

from .conftest import make_unet, window_stack
from .reference_disyre import restore_slice


@pytest.mark.parametrize("method", ["mean-single-step", "multi-step-restoration"])
@pytest.mark.parametrize("shape", [(2, 32, 32), (3, 41, 50)], ids=["one-window", "sliding-windows"])
@pytest.mark.parametrize("weight_foreground", [True, False])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_engine_equals_reference(method, shape, weight_foreground, batch_size):
    """Anomaly maps equal the per-window reference to 1e-5, batched or not.

    A batch of windows goes through different convolution kernels than a single window, which changes
    the network's output in the 7th digit; a random network amplifies that along a multi-step chain,
    so the final restoration is compared at 1e-5 for one window per batch and at 1e-4 when batched.
    """
    unet = make_unet()
    slices = window_stack(shape)
    settings = RestorationSettings(steps=4, method=method, weight_foreground=weight_foreground)
    result = run_to_end(restore(slices, unet, Schedule(), settings, batch_size=batch_size))
    final_tolerance = 1e-5 if batch_size == 1 or method == "mean-single-step" else 1e-4
    for n in range(shape[0]):
        ref_score, ref_final = restore_slice(unet, slices[n], 4, method, weight_foreground)
        np.testing.assert_allclose(result.anomaly_map[n], ref_score, atol=1e-5, rtol=0)
        np.testing.assert_allclose(result.final[n], ref_final, atol=final_tolerance, rtol=0)
    assert result.anomaly_map.max() > 0.1  # the comparison is not between two zero maps


@pytest.mark.parametrize("steps", [1, 3, 6, 29])
def test_engine_equals_reference_for_odd_step_counts(steps):
    """S = 3 and 6 exercise prev(t) = t - T // S; S = 29 the extra t = -1 step of the official schedule."""
    unet = make_unet(seed=1)
    slices = window_stack((1, 32, 32), seed=2)
    settings = RestorationSettings(steps=steps, method="multi-step-restoration")
    result = run_to_end(restore(slices, unet, Schedule(), settings))
    ref_score, ref_final = restore_slice(unet, slices[0], steps, "multi-step-restoration", True)
    np.testing.assert_allclose(result.anomaly_map[0], ref_score, atol=1e-5, rtol=0)
    np.testing.assert_allclose(result.final[0], ref_final, atol=1e-5, rtol=0)
    assert len(result.timesteps) == (30 if steps == 29 else steps)


def test_batch_size_does_not_change_results():
    unet = make_unet()
    slices = window_stack((3, 41, 50))
    results = [
        run_to_end(restore(slices, unet, Schedule(), RestorationSettings(steps=2), batch_size=b))
        for b in (1, 7, 64)
    ]
    for other in results[1:]:
        np.testing.assert_allclose(other.anomaly_map, results[0].anomaly_map, atol=1e-5, rtol=0)


def test_all_zero_windows_are_skipped_without_changing_the_map():
    unet = make_unet()
    slices = np.zeros((4, 80, 80), dtype=np.float32)
    slices[1, 10:30, 10:30] = window_stack((1, 20, 20))[0]
    result = run_to_end(restore(slices, unet, Schedule(), RestorationSettings(steps=2), batch_size=8))
    # 32-pixel windows with an 8-pixel step: 7 x 7 per 80 x 80 slice, 196 in all. The non-zero pixels
    # (rows 13-29, columns 10-25 of slice 1) meet the windows with origins 0, 8, 16, 24 on each axis.
    assert result.windows_skipped == 196 - 16
    assert result.windows_run == 16 * 2
    ref_score, _ = restore_slice(unet, slices[1], 2, "mean-single-step", True)
    np.testing.assert_allclose(result.anomaly_map[1], ref_score, atol=1e-5)
    assert not result.anomaly_map[[0, 2, 3]].any()


def test_progress_is_reported_per_batch_and_restorations_per_step():
    unet = make_unet()
    slices = window_stack((3, 41, 50))
    events = []
    result = run_to_end(
        restore(slices, unet, Schedule(), RestorationSettings(steps=3), batch_size=10), events.append
    )
    # mean-single-step batches (step, window) pairs across step boundaries: 10 pairs per batch
    batches = -(-result.windows_run // 10)
    assert len(events) == batches + 3
    assert [e.step for e in events if e.restoration is not None] == [1, 2, 3]
    assert events[-1].fraction == pytest.approx(1.0)
    assert len(result.restorations) == 3
    assert result.restorations[0].shape == slices.shape
    assert result.restorations[0].min() >= 0 and result.restorations[0].max() <= 1


def test_cancelling_stops_after_the_current_batch():
    unet = make_unet()
    calls = []
    original = unet.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    unet.forward = counting_forward
    generator = restore(window_stack((3, 41, 50)), unet, Schedule(), RestorationSettings(steps=4), batch_size=4)
    for _ in range(2):
        next(generator)
    generator.close()
    assert len(calls) == 2


def test_out_of_memory_halves_the_batch_and_gives_the_same_map():
    unet = make_unet()
    slices = window_stack((3, 41, 50))
    expected = run_to_end(restore(slices, unet, Schedule(), RestorationSettings(steps=2), batch_size=16))
    original = unet.forward
    sizes = []

    def forward_with_small_memory(sample, timestep, *args, **kwargs):
        sizes.append(sample.shape[0])
        if sample.shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(sample, timestep, *args, **kwargs)

    unet.forward = forward_with_small_memory
    result = run_to_end(restore(slices, unet, Schedule(), RestorationSettings(steps=2), batch_size=16))
    assert result.batch_size == 2  # 16 -> 8 -> 4 -> 2
    assert sizes[:4] == [16, 8, 4, 2]
    np.testing.assert_allclose(result.anomaly_map, expected.anomaly_map, atol=1e-5, rtol=0)


def test_out_of_memory_with_one_window_is_a_clear_error():
    from napari_disyre.errors import DisyreError

    unet = make_unet()

    def always_oom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory.")

    unet.forward = always_oom
    with pytest.raises(DisyreError, match="out of memory .* even with one window"):
        run_to_end(restore(window_stack((1, 32, 32)), unet, Schedule(), batch_size=1))


def test_auto_batch_size_is_bounded_by_device_windows_and_memory(monkeypatch):
    import torch

    from napari_disyre.runtime import devices

    monkeypatch.setattr(devices, "available_memory_bytes", lambda device: 10 * 2**30)
    assert devices.auto_batch_size(torch.device("cpu"), 2**20, 1000) == devices.CPU_BATCH == 4
    assert devices.auto_batch_size(torch.device("cpu"), 2**20, 3) == 3  # never more than the windows
    assert devices.auto_batch_size(torch.device("cuda"), 2**20, 10_000) == 512
    assert devices.auto_batch_size(torch.device("cuda"), 2**30, 10_000) == 5  # half the free memory
    monkeypatch.setattr(devices, "available_memory_bytes", lambda device: 0)
    assert devices.auto_batch_size(torch.device("cuda"), 2**30, 10_000) == 1


@pytest.mark.parametrize("method", ["mean-single-step", "multi-step-restoration"])
def test_step_maps_accumulate_to_the_final_map(method):
    """The map after each step: S of them, the last one the final map itself, and (for the mean of
    single steps, whose step scores only add) never decreasing from one step to the next."""
    unet = make_unet()
    slices = window_stack((2, 41, 50))
    settings = RestorationSettings(steps=3, method=method)
    kept = run_to_end(restore(slices, unet, Schedule(), settings, keep_step_maps=True))
    plain = run_to_end(restore(slices, unet, Schedule(), settings))
    assert len(kept.step_maps) == 3 and not plain.step_maps
    assert all(m.shape == kept.anomaly_map.shape for m in kept.step_maps)
    np.testing.assert_array_equal(kept.step_maps[-1], kept.anomaly_map)
    # keeping them changes nothing but the order of a float sum
    np.testing.assert_allclose(kept.anomaly_map, plain.anomaly_map, atol=1e-6, rtol=0)
    assert 0 < kept.step_maps[0].max() < kept.anomaly_map.max()
    if method == "mean-single-step":
        for before, after in zip(kept.step_maps[:-1], kept.step_maps[1:], strict=True):
            assert (after >= before - 1e-7).all()


def test_step_batched_mean_single_step_equals_stepwise():
    """One batch holding every (step, window) pair, timesteps mixed, gives the map of one window and
    one step per network call."""
    unet = make_unet()
    slices = window_stack((3, 41, 50))
    settings = RestorationSettings(steps=3)
    stepwise = run_to_end(restore(slices, unet, Schedule(), settings, batch_size=1))
    original = unet.forward
    timesteps = []

    def recording_forward(sample, timestep, *args, **kwargs):
        timesteps.append(timestep.tolist())
        return original(sample, timestep, *args, **kwargs)

    unet.forward = recording_forward
    together = run_to_end(restore(slices, unet, Schedule(), settings, batch_size=1000))
    per_step = together.windows_run // 3
    assert timesteps == [[99] * per_step + [66] * per_step + [32] * per_step]
    # one batch of all (step, window) pairs takes other convolution kernels than one window: 7th digit
    np.testing.assert_allclose(together.anomaly_map, stepwise.anomaly_map, atol=1e-5, rtol=0)
    for a, b in zip(together.restorations, stepwise.restorations, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("where", ["wrapping", "first call"])
def test_compile_failure_falls_back_to_the_eager_network(monkeypatch, where):
    unet = make_unet()
    slices = window_stack((1, 41, 50))
    expected = run_to_end(restore(slices, unet, Schedule(), RestorationSettings(steps=2), batch_size=4))

    def broken_compile(module, **kwargs):
        if where == "wrapping":
            raise RuntimeError("no C++ compiler")

        def fails(*args, **kwargs):
            raise RuntimeError("inductor: backend compiler failed")

        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        result = run_to_end(
            restore(slices, unet, Schedule(), RestorationSettings(steps=2), batch_size=4, compile=True)
        )
    np.testing.assert_allclose(result.anomaly_map, expected.anomaly_map, atol=1e-6, rtol=0)


def test_compiled_network_sees_one_static_batch_shape(monkeypatch):
    """The last, smaller batch is padded to the first batch's size (no recompilation) and cut back."""
    unet = make_unet()
    slices = window_stack((1, 41, 50))  # 12 windows, S = 2: 24 pairs in batches of 5, 5, 5, 5, 4
    expected = run_to_end(restore(slices, unet, Schedule(), RestorationSettings(steps=2), batch_size=5))
    shapes = []

    def recording_compile(module, **kwargs):
        def run(sample, timestep):
            shapes.append(tuple(sample.shape))
            return module(sample, timestep)

        return run

    monkeypatch.setattr(torch, "compile", recording_compile)
    result = run_to_end(
        restore(slices, unet, Schedule(), RestorationSettings(steps=2), batch_size=5, compile=True)
    )
    assert shapes == [(5, 1, 32, 32)] * 5
    np.testing.assert_allclose(result.anomaly_map, expected.anomaly_map, atol=1e-6, rtol=0)
