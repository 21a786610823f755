"""The official-style baseline of the benchmarks gives the engine's maps: a speed-up against it is a
speed-up at equal output."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_disyre.disyre.engine import RestorationSettings, restore
from napari_disyre.disyre.schedule import Schedule
from napari_disyre.restoration import run_to_end

from .conftest import make_unet, window_stack

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "official_style.py"


def _official_style():
    spec = importlib.util.spec_from_file_location("official_style", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.official_style_restore


@pytest.mark.parametrize("method", ["mean-single-step", "multi-step-restoration"])
@pytest.mark.parametrize("steps", [1, 3, 4])
def test_official_style_runner_equals_the_engine(method, steps):
    """Float32, 3 slices of 41 x 50 (6 windows of 32 each, 18 in all) plus an empty slice; chunks of
    7 windows so that the chain runs on several chunks, some mixing slices. Anomaly maps agree to
    1e-5; the final restoration of multi-step-restoration to 1e-4, because batches of different sizes
    take different convolution kernels (7th digit) and a random network amplifies that along the chain
    (as in ``test_engine_equals_reference``)."""
    unet = make_unet(seed=3)
    slices = np.concatenate([window_stack((3, 41, 50), seed=4), np.zeros((1, 41, 50), np.float32)])
    slices[1, :, :20] = 0  # windows that are all zero (skipped by the engine, run by the official code)
    official = _official_style()
    anomaly, final = official(slices, unet, Schedule(), steps, method, True, sw_batch_size=7)
    settings = RestorationSettings(steps=steps, method=method)
    result = run_to_end(restore(slices, unet, Schedule(), settings, batch_size=5))
    assert result.windows_skipped > 0
    np.testing.assert_allclose(result.anomaly_map, anomaly, atol=1e-5, rtol=0)
    final_tolerance = 1e-5 if method == "mean-single-step" else 1e-4
    np.testing.assert_allclose(result.final, final, atol=final_tolerance, rtol=0)
    assert anomaly.max() > 0.05 and not anomaly[3].any()
