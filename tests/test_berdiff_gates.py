"""Quality gates of a Bernoulli diffusion run, on hand-computed toys: a flip model that only knows
each channel's flip rate ties the trivial guess and fails; one that knows the code passes; the
autoencoder's error is measured on the foreground; a training run records the gates and says when
it is not done."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_disyre.berdiff.bernoulli import BernoulliSchedule  # noqa: E402
from napari_disyre.berdiff.gates import (  # noqa: E402
    GateReport,
    QualityGates,
    autoencoder_error,
    latent_losses,
)
from napari_disyre.cli import main  # noqa: E402

from .conftest import BERDIFF_FAST  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def two_channel_codes() -> torch.Tensor:
    """Channel 0 all ones, channel 1 all zeros: under the 'code' forward process only channel 0
    flips, at the rate 1 - abar_t, and a 1 in x_t is never a flip."""
    codes = torch.zeros(64, 2, 8, 8)
    codes[:, 0] = 1
    return codes


def test_a_per_channel_constant_ties_the_trivial_guess_and_a_model_that_knows_the_code_beats_it():
    schedule, t = BernoulliSchedule(), 299
    flip_rate = 1 - float(schedule.alphas_cumprod[t])  # 0.3447
    entropy = -(flip_rate * math.log2(flip_rate) + (1 - flip_rate) * math.log2(1 - flip_rate))

    def constant(x, t):  # the per-channel flip rate, whatever x_t is
        out = torch.full_like(x, 1e-7)
        out[:, 0] = flip_rate
        return out

    knows = lambda x, t: torch.stack([1 - x[:, 0], torch.zeros_like(x[:, 1])], 1)  # noqa: E731
    for model, expected in ((constant, None), (knows, 0.0)):
        bits, trivial = latent_losses(
            model, schedule, two_channel_codes(), t, torch.Generator().manual_seed(0)
        )
        # the trivial guess: channel 0's binary entropy at the observed rate, channel 1's zero, averaged
        assert trivial == pytest.approx(entropy / 2, abs=0.01)
        if expected is None:
            assert bits == pytest.approx(trivial, abs=0.01)
        else:
            assert bits == pytest.approx(0.0, abs=1e-6)
    gates = QualityGates(unet_margin_bits=0.01, ae_max_error=0.05)
    tie = GateReport(gates, 64, ae_error=0.01, unet_bits=0.4616, trivial_bits=0.4620)
    assert (
        not tie.passed and "does not beat the per-channel trivial guess 0.4620 by 0.01" in tie.failures()[0]
    )
    assert GateReport(gates, 64, ae_error=0.01, unet_bits=0.2, trivial_bits=0.4620).passed
    bad_ae = GateReport(gates, 64, ae_error=0.08, unet_bits=0.2, trivial_bits=0.4620)
    assert bad_ae.failures() == ["autoencoder held-out error 0.0800 is not below 0.05"]
    nothing = GateReport(gates, 0).to_dict()
    assert (
        not nothing["passed"]
        and nothing["ae_error"] is None
        and "no held-out slices" in nothing["failures"][0]
    )


def test_the_autoencoder_error_counts_the_foreground_only():
    class Grey:
        """Decodes every code to 0.5: its error is |0.5 - x| where x > 0."""

        def decode(self, code):
            return torch.full((len(code), 1, 4, 4), 0.5)

    images = np.zeros((2, 1, 4, 4), np.float32)
    images[:, :, :2] = 0.9  # half the pixels: error 0.4 there; background (x = 0) not counted
    assert autoencoder_error(Grey(), images, torch.zeros(2, 1, 1, 1)) == pytest.approx(0.4)


def test_a_training_run_records_its_gates_and_is_not_called_done_when_they_fail(
    tmp_path, healthy_t1_scans, capsys
):
    out = tmp_path / "bd"
    args = [
        "train",
        str(healthy_t1_scans),
        *BERDIFF_FAST,
        "--val-count",
        "1",
        "--diffusion-steps",
        "2",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert (
        "quality gates FAILED: not done, not shippable: latent UNet held-out loss" in capsys.readouterr().out
    )
    meta = json.loads((out / "berdiff.json").read_text())
    gates = meta["training"]["quality_gates"]
    assert gates["gates"]["unet_margin_bits"] == 0.01 and gates["gates"]["ae_max_error"] == 0.05
    assert gates["held_out_slices"] > 0 and not gates["passed"]
    assert gates["unet_bits"] == pytest.approx(np.mean([m for m, _ in gates["per_timestep"].values()]))
    assert meta["description"].startswith("NOT SHIPPABLE, quality gates failed")
    record = json.loads((out / "training" / "config.json").read_text())
    assert record["finished"] and not record["done"]
    assert main(["info", str(out)]) == 0
    assert "quality gates FAILED (not shippable): latent UNet" in capsys.readouterr().out
    # gates loose enough for two steps of training: the same run is done; here with the paper's
    # symmetric forward process, which the checkpoint then noises with
    lax = tmp_path / "lax"
    loose = ["--gate-unet-margin", "-1", "--gate-ae-error", "1", "--forward-process", "symmetric"]
    assert main([*args[:-1], str(lax), *loose]) == 0
    assert "quality gates passed" in capsys.readouterr().out
    assert json.loads((lax / "training" / "config.json").read_text())["done"]
    assert json.loads((lax / "berdiff.json").read_text())["schedule"]["forward"] == "symmetric"
    assert main([*args[:-1], str(lax), *loose[:-2], "--resume", "--diffusion-steps", "3"]) == 2
    assert "other settings than the run it continues (forward)" in capsys.readouterr().err
