"""Issue 27, class 3 (no NaN leaves training or detection): a non-finite loss stops training with the last
good state kept and nothing exported; export and loading refuse non-finite weights; detection never
hands on a non-finite map; step counts, learning rates, --save-every and L/P are refused before
training. Each case: the issue's probe and a fresh variant."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_disyre.cli import main
from napari_disyre.errors import CheckpointError, DisyreError

from .conftest import healthy_folder, make_unet, snapshot, synthetic_brain

pytestmark = pytest.mark.usefixtures("tiny_preset")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lr", "1e6"], "--lr: value 1000000.0: input should be less than or equal to 1"),  # the issue's
        (["--lr", "nan"], "--lr: value nan: must be a finite number"),
        (["--lr=-0.1"], "--lr: value -0.1: input should be greater than or equal to 0"),
        (["--steps=-5"], "--steps: value -5: input should be greater than or equal to 1"),
        (["--steps", "0"], "--steps: value 0: input should be greater than or equal to 1"),
        (["--steps", "2.5"], "--steps: value 2.5: must be a whole number"),
        (["--save-every", "0"], "--save-every: value 0: input should be greater than or equal to 1"),
        (["--crop", "7"], "--crop: value 7: input should be greater than or equal to 16"),
        (["--crop", "100"], "--crop: value 100: input should be a multiple of 8"),
        (["--method", "berdiff", "--noise-level", "0"], "--noise-level: value 0: input should be greater"),
        (["--method", "berdiff", "--flip-threshold", "1.5"], "--flip-threshold: value 1.5: input should be less"),
        (["--method", "berdiff", "--save-every", "0"], "--save-every: value 0"),
    ],
)
def test_training_options_are_refused_before_training(tmp_path, capsys, extra, message):
    healthy = healthy_folder(tmp_path / "healthy")
    before = snapshot(tmp_path)
    assert main(["train", str(healthy), "--out", str(tmp_path / "model"), "--device", "cpu", *extra]) == 2
    assert message in capsys.readouterr().err
    assert snapshot(tmp_path) == before and not (tmp_path / "model").exists()


def test_the_python_configs_refuse_the_same_values():
    from napari_disyre.berdiff.run import BerDiffRunConfig
    from napari_disyre.training.config import TrainingConfig

    for bad in (dict(steps=0), dict(steps=-5), dict(learning_rate=float("nan")), dict(save_every=0)):
        with pytest.raises(DisyreError, match=f"TrainingConfig: {next(iter(bad))}"):
            TrainingConfig(**bad)
    for bad in (dict(noise_level=0), dict(noise_level=1000), dict(threshold=1.5), dict(threshold=float("nan"))):
        with pytest.raises(DisyreError, match=f"berdiff training: {next(iter(bad))}"):
            BerDiffRunConfig(**bad)


def test_a_non_finite_loss_stops_training_keeps_the_last_good_state_and_exports_nothing(tmp_path, monkeypatch, capsys):
    import torch

    from napari_disyre.training import loop
    from napari_disyre.training.state import read_state

    real = loop._optimisation_step
    calls = []

    def diverging(*args):
        calls.append(1)
        return float("nan") if len(calls) == 3 else real(*args)

    monkeypatch.setattr(loop, "_optimisation_step", diverging)
    out = tmp_path / "model"
    argv = ["train", str(healthy_folder(tmp_path / "healthy")), "--out", str(out), "--val-count", "0",
            "--device", "cpu", "--save-every", "100"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the training loss became nan at step 3" in err and "last good state (step 2) is saved" in err
    state = read_state(out / "training" / "state.pt")
    assert state["step"] == 2 and all(torch.isfinite(t).all() for t in state["unet"].values())
    assert not (out / "disyre.json").exists() and not (out / "unet").exists()  # nothing exported


def test_a_nan_batch_is_not_stepped_on(tmp_path):
    """The fresh variant at the lowest level: a batch that gives a NaN loss leaves the weights as they were."""
    import torch

    from napari_disyre.training.config import TrainingConfig
    from napari_disyre.training.loop import _optimisation_step

    unet = make_unet().train()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    corrupted = np.full((2, 1, 32, 32), np.nan, np.float32)
    clean = np.zeros((2, 1, 32, 32), np.float32)
    loss = _optimisation_step(unet, optimizer, schedule, torch.device("cpu"), None, corrupted, clean,
                              np.array([10, 20]), TrainingConfig())  # fmt: skip
    assert np.isnan(loss)
    for key, value in unet.state_dict().items():
        assert torch.equal(value, before[key]), key


def _nan_checkpoint(tmp_path):
    """A saved DISYRE checkpoint with one NaN weight (what a diverged run would have exported)."""
    import torch

    from napari_disyre.disyre.checkpoint import Checkpoint, CheckpointInfo, save_checkpoint
    from napari_disyre.disyre.schedule import Schedule

    unet = make_unet()
    with torch.no_grad():
        next(unet.parameters()).view(-1)[0] = float("nan")
    return unet, save_checkpoint(tmp_path / "nan_ckpt", Checkpoint(unet, Schedule(), CheckpointInfo()))


def test_detection_refuses_a_checkpoint_with_non_finite_weights_and_writes_no_map(tmp_path, capsys, nifti_scan):
    unet, folder = _nan_checkpoint(tmp_path)
    from napari_disyre import load_checkpoint

    with pytest.raises(CheckpointError, match="holds NaN or infinite values: the training diverged"):
        load_checkpoint(folder)
    out = tmp_path / "map.nii.gz"
    assert main(["detect", str(nifti_scan), "-c", str(folder), "--out-map", str(out), "--device", "cpu", "-q"]) == 2
    assert "cannot be used" in capsys.readouterr().err and not out.exists()


def test_detect_never_hands_on_a_non_finite_map(tiny_checkpoint):
    """The fresh variant: an in-memory model (never loaded from disk) with a NaN weight."""
    import torch

    from napari_disyre import Volume, detect

    with torch.no_grad():
        next(tiny_checkpoint.unet.parameters()).view(-1)[0] = float("nan")
    data, _ = synthetic_brain()
    with pytest.raises(DisyreError, match="the model gave NaN or infinite scores"):
        detect(Volume(data, np.diag([1.5, 1.5, 1.5, 1.0])), tiny_checkpoint, device="cpu")


def test_export_refuses_non_finite_weights(tmp_path):
    from napari_disyre.checkpoint_files import check_finite_weights

    unet, _ = _nan_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="the training diverged, so the model is not exported"):
        check_finite_weights(unet.state_dict(), str(tmp_path / "out"), exporting=True)
    assert json.loads((tmp_path / "nan_ckpt" / "disyre.json").read_text())["format"] == "napari-disyre"
