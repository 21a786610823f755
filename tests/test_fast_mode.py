"""Fast mode: fewer windows and steps, and anomaly maps close to exact mode's."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from napari_disyre import load_checkpoint
from napari_disyre.cli import build_parser
from napari_disyre.cli.common import restoration_settings
from napari_disyre.detection.pipeline import default_settings, detect
from napari_disyre.disyre.engine import RestorationSettings, restore
from napari_disyre.disyre.schedule import Schedule
from napari_disyre.evaluation.metrics import average_precision
from napari_disyre.restoration import run_to_end
from napari_disyre.sample_data import demo_checkpoint_path, demo_lesion_path, demo_scan_path
from napari_disyre.scans.nifti import load_scan

from .conftest import make_unet


def test_fast_mode_steps_windows_by_half_a_window():
    """64 x 64 slices, 32 x 32 windows: step 8 gives 5 x 5 windows, fast mode's step 16 gives 3 x 3."""
    unet = make_unet()
    slices = np.random.default_rng(0).uniform(0.1, 1, (2, 64, 64)).astype(np.float32)
    exact = run_to_end(restore(slices, unet, Schedule(), RestorationSettings(steps=1)))
    fast = run_to_end(restore(slices, unet, Schedule(), RestorationSettings(steps=1, fast=True)))
    assert (exact.windows_run, fast.windows_run) == (2 * 25, 2 * 9)
    assert RestorationSettings(fast=True, overlap=0.75).window_overlap == 0.75  # never more windows


def test_fast_option_defaults_to_one_step_unless_steps_are_given(tiny_checkpoint):
    parser = build_parser()
    for argv, steps in (([], 4), (["--fast"], 1), (["--fast", "--steps", "3"], 3)):
        args = parser.parse_args(["detect", "scan.nii.gz", *argv])
        settings = restoration_settings(args, tiny_checkpoint)
        assert (settings.steps, settings.fast) == (steps, "--fast" in argv)


def test_fast_mode_maps_are_close_to_exact_on_the_demo():
    """The bundled model on the demo scan: fast mode (S = 1, half-window steps) against the exact
    default (S = 4, quarter-window steps). Bounds: AP at most 0.01 below exact mode's, and maps
    correlated inside the brain at 0.9 or more."""
    checkpoint = load_checkpoint(demo_checkpoint_path())
    scan = load_scan(demo_scan_path())
    lesion = np.asarray(nib.load(demo_lesion_path()).dataobj) > 0
    options = {"device": "cpu", "keep_restorations": False}
    exact = detect(scan, checkpoint, default_settings(checkpoint), **options)
    fast = detect(scan, checkpoint, default_settings(checkpoint, fast=True), **options)
    assert (exact.settings.steps, fast.settings.steps, fast.settings.window_overlap) == (4, 1, 0.5)
    brain = exact.foreground
    ap_exact = average_precision(exact.anomaly_map, lesion, brain)
    ap_fast = average_precision(fast.anomaly_map, lesion, brain)
    assert ap_fast >= ap_exact - 0.01
    assert np.corrcoef(exact.anomaly_map[brain], fast.anomaly_map[brain])[0, 1] >= 0.9
