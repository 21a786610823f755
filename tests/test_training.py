"""Training: a tiny run learns, saves a loadable checkpoint, resumes exactly; bad input stops early."""

from __future__ import annotations

import dataclasses
import json
import time

import nibabel as nib
import numpy as np
import pytest

from napari_disyre import load_checkpoint
from napari_disyre.cli import main
from napari_disyre.errors import DisyreError
from napari_disyre.training.dataset import TrainingScan
from napari_disyre.training.loop import TrainingConfig, train

from .conftest import TINY, run_torchrun, synthetic_brain


def _config(**changes) -> TrainingConfig:
    base = dict(
        steps=24, batch_size=4, crop=64, learning_rate=2e-3, warmup_steps=2, validate_every=12, save_every=12,
        log_every=5, validation_examples=8, spacing=(1.5, 1.5, 4.0), contrast="T1", device="cpu", unet_overrides=TINY,
    )  # fmt: skip
    return TrainingConfig(**{**base, **changes})


@pytest.fixture
def healthy(tmp_path) -> tuple[list[TrainingScan], list[TrainingScan]]:
    folder = tmp_path / "healthy"
    folder.mkdir()
    scans = []
    for seed in range(4):
        data, _ = synthetic_brain(shape=(64, 72, 16), seed=seed, lesion=False)
        path = folder / f"sub-{seed}_T1w.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)
        scans.append(TrainingScan(path))
    return scans[:3], scans[3:]


def _weights(folder):
    from safetensors.numpy import load_file

    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def test_tiny_run_learns_saves_and_reloads(tmp_path, healthy):
    scans, validation = healthy
    report = train(scans, validation, tmp_path / "model", _config(), progress=False)
    assert report.steps_done == 24
    assert report.last_loss < report.first_loss
    out = tmp_path / "model"
    for name in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json", "disyre.json", "training/config.json", "training/log.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    info = json.loads((out / "disyre.json").read_text())
    assert info["contrast"] == "T1" and info["preprocessing"]["spacing"] == [1.5, 1.5, 4.0]
    assert set(info["healthy_score_quantiles"]) >= {"0.5", "0.999"}
    steps = [int(line.split(",")[0]) for line in (out / "training/log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 24
    # reloading gives the same network: identical outputs on a fixed input
    import torch

    first, second = load_checkpoint(out), load_checkpoint(out)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 60])
    with torch.no_grad():
        assert torch.equal(first.unet(x, t).sample, second.unet(x, t).sample)
    saved = _weights(out)
    for name, tensor in first.unet.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), saved[name])


def test_interrupted_run_resumes_exactly(tmp_path, healthy):
    scans, validation = healthy
    train(scans, validation, tmp_path / "straight", _config(), progress=False)

    def interrupt(step, loss):
        if step == 12:
            time.sleep(2.0)  # the first session lasts at least 2 s
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(scans, validation, tmp_path / "resumed", _config(), progress=False, on_step=interrupt)
    report = train(scans, validation, tmp_path / "resumed", _config(), progress=False, resume=True)
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)
    # the wall time recorded with the checkpoint covers both sessions, not only the resumed one
    recorded = json.loads((tmp_path / "resumed" / "disyre.json").read_text())["training"]["wall_time_s"]
    assert recorded >= 2.0 and report.seconds >= 2.0


@pytest.mark.parametrize("problem", ["empty", "not-nifti", "mixed", "4d", "zeros"])
def test_bad_training_input_stops_before_training(tmp_path, problem, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    data, _ = synthetic_brain(shape=(20, 20, 10), lesion=False)
    affine = np.eye(4)
    if problem != "empty":
        nib.save(nib.Nifti1Image(data, affine), folder / "a_T1w.nii.gz")
    if problem == "not-nifti":
        (folder / "notes.txt").write_text("hello")
    if problem == "mixed":
        nib.save(nib.Nifti1Image(data, affine), folder / "b_FLAIR.nii.gz")
    if problem == "4d":
        nib.save(nib.Nifti1Image(np.stack([data, data], -1), affine), folder / "b_T1w.nii.gz")
    if problem == "zeros":
        nib.save(nib.Nifti1Image(np.zeros_like(data), affine), folder / "b_T1w.nii.gz")
    pattern = "*" if problem == "not-nifti" else "*.nii*"
    code = main(["train", str(folder), "--out", str(tmp_path / "model"), "--steps", "2", "--pattern", pattern,
                 "--val-count", "0", "--device", "cpu"])  # fmt: skip
    error = capsys.readouterr().err
    assert code == 2 and "error:" in error
    expected = {"empty": "no file matches", "not-nifti": "notes.txt", "mixed": "FLAIR", "4d": "b_T1w",
                "zeros": "b_T1w"}[problem]  # fmt: skip
    assert expected in error
    assert not (tmp_path / "model").exists()


def test_resume_without_state_and_existing_output_are_refused(tmp_path, healthy):
    scans, validation = healthy
    with pytest.raises(DisyreError, match="nothing to resume"):
        train(scans, validation, tmp_path / "none", _config(), progress=False, resume=True)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(DisyreError):
        train(scans, validation, existing, _config(), progress=False)
    assert (existing / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("precision", ["auto", "bfloat16", "float16", "float32"])
def test_precision_and_workers_options_reach_the_training(tmp_path, healthy, monkeypatch, precision):
    import torch

    from napari_disyre.runtime.devices import training_autocast_dtype

    seen = {}

    def fake_train(scans, validation, output, config, **kwargs):
        seen["config"] = config
        raise DisyreError("stopped by the test")

    monkeypatch.setattr("napari_disyre.training.loop.train", fake_train)
    folder = healthy[0][0].path.parent
    code = main(["train", str(folder), "--out", str(tmp_path / "m"), "--precision", precision, "--device", "cpu",
                 "--workers", "2"])  # fmt: skip
    assert code == 2 and seen["config"].precision == precision and seen["config"].workers == 2
    expected = {
        "auto": torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float32": None,
    }
    assert training_autocast_dtype(torch.device("cuda"), precision) == expected[precision]
    assert training_autocast_dtype(torch.device("cpu"), precision) is None  # CPU training is float32


def test_batches_from_worker_processes_equal_those_made_here(healthy):
    from napari_disyre.disyre.schedule import Schedule
    from napari_disyre.training.dataset import CorruptedSlices, SliceBank, training_batches

    bank = SliceBank.from_scans(healthy[0], _config().resolved().preprocessing)
    stream = CorruptedSlices(bank, Schedule(), (0, 0), crop=64)
    here = list(training_batches(stream, 3, 6, 4, workers=0))
    there = list(training_batches(stream, 3, 6, 4, workers=2))
    assert len(here) == len(there) == 3
    for made_here, made_there in zip(here, there, strict=True):
        for a, b in zip(made_here, made_there, strict=True):
            np.testing.assert_array_equal(a, np.asarray(b))
    assert here[0][0].shape == (4, 1, 64, 64) and here[0][2].dtype == np.int64
    # batch k depends on k alone (what a resumed run relies on), and batches differ from each other
    np.testing.assert_array_equal(stream.batch(4, 4)[0], here[1][0])
    assert not np.array_equal(here[0][0], here[1][0])


def test_training_with_workers_gives_the_same_weights(tmp_path, healthy):
    scans, validation = healthy
    config = _config(steps=6, validate_every=6, save_every=6)
    train(scans, validation, tmp_path / "here", config, progress=False)
    train(scans, validation, tmp_path / "workers", dataclasses.replace(config, workers=1), progress=False)
    here, workers = _weights(tmp_path / "here"), _weights(tmp_path / "workers")
    assert here.keys() == workers.keys()
    for key in here:
        np.testing.assert_allclose(here[key], workers[key], rtol=0, atol=1e-6, err_msg=key)
    recorded = json.loads((tmp_path / "workers" / "training" / "config.json").read_text())
    assert recorded["workers"] == 1
    with pytest.raises(DisyreError, match="TrainingConfig: workers -1: input should be greater than or equal to 0"):
        train(scans, validation, tmp_path / "bad", dataclasses.replace(config, workers=-1), progress=False)


def test_auto_workers_leave_the_cpu_to_the_network_and_share_cores_between_gpus(monkeypatch):
    import os

    import torch

    from napari_disyre.training.distributed import auto_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert auto_workers(torch.device("cpu"), 1) == 0
    assert auto_workers(torch.device("cuda"), 1) == 8  # capped
    assert auto_workers(torch.device("cuda"), 4) == 3  # 16 cores / 4 ranks, one for each loop
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert auto_workers(torch.device("cuda"), 1) == 1
    assert auto_workers(torch.device("cuda"), 2) == 0


def test_init_fine_tunes_a_checkpoint_keeping_its_network_and_grid(tmp_path, healthy):
    scans, validation = healthy
    train(scans, [], tmp_path / "first", _config(steps=6, save_every=6), progress=False)
    # another preset and spacing are asked for, but the starting checkpoint's network and grid win;
    # with a learning rate of 0 the weights must come out unchanged
    config = _config(steps=3, save_every=3, learning_rate=0.0, spacing=(1.0, 1.0, 1.0), unet_overrides={})
    report = train(
        scans,
        [],
        tmp_path / "tuned",
        dataclasses.replace(config, init=str(tmp_path / "first")),
        progress=False,
    )
    assert report.steps_done == 3
    first, tuned = _weights(tmp_path / "first"), _weights(tmp_path / "tuned")
    assert first.keys() == tuned.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], tuned[key], err_msg=key)
    info = json.loads((tmp_path / "tuned" / "disyre.json").read_text())
    assert info["preprocessing"]["spacing"] == [1.5, 1.5, 4.0]
    assert info["training"]["initialised_from"] == str(tmp_path / "first")
    with pytest.raises(DisyreError, match="missing"):
        train(scans, [], tmp_path / "bad", dataclasses.replace(config, init=str(tmp_path / "missing")))


def test_torchrun_trains_disyre_on_two_ranks_with_averaged_gradients(tmp_path, healthy, capsys):
    """Two CPU ranks (gloo): rank 0 alone writes and reports, the log is written once, and the weights
    differ from a one-process run of the same seed (rank 0 draws the same batches: rank 1's count)."""
    import csv

    folder = healthy[0][0].path.parent
    args = [
        "train",
        str(folder),
        "--preset",
        "small",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--val-count",
        "0",
    ]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    done = run_torchrun([*args, "--out", str(tmp_path / "two")])
    assert done.stdout.count("saved ") == 1

    def logged(run):
        return [r["step"] for r in csv.DictReader((tmp_path / run / "training" / "log.csv").open())]

    assert logged("two") == logged("one") == ["2"]  # written once, by rank 0
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert one.keys() == two.keys()
    assert any(not np.array_equal(one[k], two[k]) for k in one)
    load_checkpoint(tmp_path / "two")  # a complete checkpoint
