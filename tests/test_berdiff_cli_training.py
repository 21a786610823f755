"""``napari-disyre train --method berdiff``: the small preset for a few steps on tiny synthetic
volumes, through the DISYRE data pipeline; saved, reloaded, identical maps; exact resume; errors
before any training."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_disyre import load_checkpoint  # noqa: E402
from napari_disyre.cli import main  # noqa: E402
from napari_disyre.detection.pipeline import detect  # noqa: E402
from napari_disyre.scans.nifti import load_scan  # noqa: E402

from .conftest import BERDIFF_FAST, run_torchrun  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "latent_unet.safetensors")), load_file(
        str(folder / "autoencoder.safetensors")
    )


def test_train_small_preset_save_reload_identical_maps_and_exact_resume(tmp_path, healthy_t1_scans, capsys):
    out = tmp_path / "bd"
    args = ["train", str(healthy_t1_scans), *BERDIFF_FAST, "--val-count", "1", "--save-every", "1"]
    assert main([*args, "--diffusion-steps", "3", "--out", str(out)]) == 0
    assert "masked Bernoulli diffusion" in capsys.readouterr().out
    model = load_checkpoint(out)
    assert model.kind == "berdiff" and model.inference.noise_level == 3 and model.inference.threshold == 0.6
    assert model.preprocessing["spacing"] == [1.5, 1.5, 1.5] and model.training["training_scans"] == [
        "sub-0_T1w.nii.gz",
        "sub-1_T1w.nii.gz",
    ]
    assert set(model.healthy_score_quantiles) >= {"0.99", "0.999"}
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "noise level L = 3, flip threshold P = 0.6" in info
    assert "trained: preset small, 2 autoencoder + 3 diffusion steps, 2 scans" in info
    rows = list(csv.DictReader((out / "training" / "log.csv").open()))
    assert [(r["stage"], int(r["step"])) for r in rows] == [
        ("autoencoder", 1),
        ("autoencoder", 2),
        ("diffusion", 1),
        ("diffusion", 2),
        ("diffusion", 3),
    ]
    scan = load_scan(healthy_t1_scans / "sub-2_T1w.nii.gz")
    first, again = detect(scan, model), detect(scan, load_checkpoint(out))
    assert np.array_equal(first.anomaly_map, again.anomaly_map) and first.anomaly_map.max() > 0
    assert np.array_equal(first.flip_mask, again.flip_mask)
    # interrupted after 2 diffusion steps, resumed to 3: the same weights as the straight run
    part = tmp_path / "part"
    assert main([*args, "--diffusion-steps", "2", "--out", str(part)]) == 0
    assert main([*args, "--diffusion-steps", "3", "--out", str(part), "--resume"]) == 0
    for straight, resumed in zip(weights(out), weights(part), strict=True):
        assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    steps = [(r["stage"], int(r["step"])) for r in csv.DictReader((part / "training" / "log.csv").open())]
    assert steps[-2:] == [("diffusion", 2), ("diffusion", 3)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--init", "x"], "--init apply to --method disyre only"),
        (["--steps", "5"], "--steps apply to --method disyre only"),
        (["--ae-steps", "0"], "--ae-steps: value 0: input should be greater than or equal to 1"),
        (["--code-size", "0"], "--code-size: value 0: input should be greater than or equal to 1"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_bad_berdiff_training_input_stops_before_training(tmp_path, healthy_t1_scans, capsys, extra, message):
    out = tmp_path / "bd"
    assert main(["train", str(healthy_t1_scans), "--method", "berdiff", "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_resume_with_other_settings_is_refused(tmp_path, healthy_t1_scans, capsys):
    out = tmp_path / "bd"
    args = [
        "train",
        str(healthy_t1_scans),
        *BERDIFF_FAST,
        "--val-count",
        "0",
        "--diffusion-steps",
        "1",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert main([*args, "--resume", "--seed", "3"]) == 2
    assert "other settings than the run it continues (seed)" in capsys.readouterr().err
    assert main([*args, "--resume", "--code-size", "16"]) == 2
    assert "other settings than the run it continues (code_size)" in capsys.readouterr().err
    assert main(args) == 2  # finished: the message says so, and how to train it further
    assert (
        "a finished training run: train it further with --resume and more --diffusion-steps"
        in capsys.readouterr().err
    )


def test_code_size_sets_the_bits_of_the_code_and_of_the_latent_unet(tmp_path, healthy_t1_scans):
    """``--code-size 8``: an 8-bit code (the small preset's is 32), the latent UNet taking and giving
    8 channels; recorded in berdiff.json and used by detection."""
    out = tmp_path / "bd8"
    args = [*BERDIFF_FAST, "--val-count", "0", "--diffusion-steps", "1", "--code-size", "8"]
    assert main(["train", str(healthy_t1_scans), *args, "--out", str(out)]) == 0
    meta = json.loads((out / "berdiff.json").read_text())
    assert meta["autoencoder"]["codebook_bits"] == 8 and meta["latent_unet"]["bits"] == 8
    unet, _ = weights(out)
    assert unet["conv_in.weight"].shape[1] == 8 and unet["conv_out.weight"].shape[0] == 8
    scan = load_scan(healthy_t1_scans / "sub-2_T1w.nii.gz")
    assert detect(scan, load_checkpoint(out)).anomaly_map.shape == scan.data.shape


def test_options_of_the_other_method_are_refused(tmp_path, healthy_t1_scans, capsys):
    out = tmp_path / "d"
    assert main(["train", str(healthy_t1_scans), "--out", str(out), "--code-size", "8", "--ae-steps", "3"]) == 2
    assert "--ae-steps, --code-size apply to --method berdiff only" in capsys.readouterr().err
    assert not out.exists()


def test_resuming_a_run_of_the_other_method_names_it(tmp_path, healthy_t1_scans, capsys):
    from napari_disyre.training.state import write_state

    out = tmp_path / "run"
    write_state(out, {"step": 3, "unet": {}})  # a DISYRE state
    assert main(["train", str(healthy_t1_scans), "--method", "berdiff", "--out", str(out), "--resume"]) == 2
    assert "the state of a --method disyre run; resume it with --method disyre" in capsys.readouterr().err
    write_state(out, {"stage_name": "autoencoder", "stage": None})
    assert main(["train", str(healthy_t1_scans), "--out", str(out), "--resume", "--val-count", "0"]) == 2
    assert "the state of a --method berdiff run; resume it with --method berdiff" in capsys.readouterr().err


def test_torchrun_trains_on_two_ranks_with_averaged_gradients(tmp_path, healthy_t1_scans):
    """Two CPU ranks (gloo): one checkpoint and one log written by rank 0, each step logged once, and
    weights that differ from a one-process run of the same seed (rank 1's batches count too)."""
    args = ["train", str(healthy_t1_scans), *BERDIFF_FAST, "--diffusion-steps", "2", "--val-count", "0"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    run_torchrun([*args, "--out", str(tmp_path / "two")])
    two = tmp_path / "two"
    assert json.loads((two / "berdiff.json").read_text())["training"]["ranks"] == 2
    rows = list(csv.DictReader((two / "training" / "log.csv").read_text().splitlines()))
    assert [(r["stage"], r["step"]) for r in rows] == [
        ("autoencoder", "1"), ("autoencoder", "2"), ("diffusion", "1"), ("diffusion", "2")
    ]  # fmt: skip
    one_unet, _ = weights(tmp_path / "one")  # the autoencoder's EMA moves every 10 steps only
    two_unet, _ = weights(two)
    assert one_unet.keys() == two_unet.keys()
    assert any(not torch.equal(one_unet[k], two_unet[k]) for k in one_unet)
