"""The Bernoulli diffusion equations (method document §3.1-3.2) on hand-made tensors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from napari_disyre.berdiff.bernoulli import (  # noqa: E402
    BernoulliSchedule,
    bce_bits,
    forward_probability,
    posterior_probability,
    training_loss,
    x0_from_flip_probability,
)
from napari_disyre.errors import DisyreError  # noqa: E402

# betas 0.1, 0.2, 0.3 -> alphas 0.9, 0.8, 0.7 -> abar 0.9, 0.72, 0.504
THREE = BernoulliSchedule(steps=3, beta_start=0.1, beta_end=0.3)


def test_official_abar_values_from_the_method_document():
    abar = BernoulliSchedule().alphas_cumprod
    assert abar.shape == (1000,)
    assert float(abar[0]) == pytest.approx(0.9999, abs=5e-5)
    assert float(abar[100]) == pytest.approx(0.8951, abs=5e-5)
    assert float(abar[200]) == pytest.approx(0.6563, abs=5e-5)
    assert float(abar[999]) == pytest.approx(4.0e-5, rel=0.05)
    # by hand: abar_100 = prod_{j<=100} (1 - beta_j), beta_j = 1e-4 + j (0.02 - 1e-4) / 999
    by_hand = math.prod(1 - (1e-4 + j * (0.02 - 1e-4) / 999) for j in range(101))
    assert float(abar[100]) == pytest.approx(by_hand, rel=1e-12)


def test_small_schedule_by_hand():
    assert THREE.alphas.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert THREE.alphas_cumprod.tolist() == pytest.approx([0.9, 0.72, 0.504])


def test_forward_probability_code_faithful_default():
    x0 = torch.tensor([[1.0, 0.0, 1.0]])
    p = forward_probability(THREE, x0, 2)
    assert p.flatten().tolist() == pytest.approx([0.504, 0.0, 0.504])  # a 0-bit never turns on


def test_forward_probability_symmetric_option():
    sym = BernoulliSchedule(steps=3, beta_start=0.1, beta_end=0.3, forward="symmetric")
    x0 = torch.tensor([[1.0, 0.0]])
    # abar x0 + (1 - abar) / 2 = 0.504 + 0.248, 0.248
    assert forward_probability(sym, x0, 2).flatten().tolist() == pytest.approx([0.752, 0.248])


def test_forward_probability_per_sample_timesteps():
    x0 = torch.ones(2, 1, 1, 1)
    p = forward_probability(THREE, x0, torch.tensor([0, 1]))
    assert p.flatten().tolist() == pytest.approx([0.9, 0.72])


def test_unknown_forward_process_is_refused():
    with pytest.raises(DisyreError, match="forward process"):
        BernoulliSchedule(forward="paper")


def test_posterior_by_hand():
    # t = 1: alpha_1 = 0.8, abar_0 = 0.9
    x_t = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    x0 = torch.tensor([[1.0, 1.0, 0.5, 0.0]])
    p = posterior_probability(THREE, x0, x_t, 1)
    expected = [
        0.855 / (0.855 + 0.005),  # theta2 = 0.9*0.95, theta1 = 0.1*0.05
        0.095 / (0.095 + 0.045),  # theta2 = 0.1*0.95, theta1 = 0.9*0.05
        0.45 / (0.45 + 0.05),  # theta2 = 0.9*0.5, theta1 = 0.1*0.5
        0.005 / (0.005 + 0.855),
    ]
    assert p.flatten().tolist() == pytest.approx(expected)


def test_posterior_refuses_step_zero():
    with pytest.raises(DisyreError, match="t >= 1"):
        posterior_probability(THREE, torch.zeros(1, 2), torch.zeros(1, 2), 0)


def test_x0_from_flip_probability():
    x_t = torch.tensor([1.0, 1.0, 0.0, 0.0])
    flip = torch.tensor([0.1, 0.9, 0.1, 0.9])
    assert x0_from_flip_probability(x_t, flip).tolist() == pytest.approx([0.9, 0.1, 0.1, 0.9])


def test_bce_in_bits_by_hand():
    flip = torch.tensor([[0.5, 0.25], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss = bce_bits(flip, target)
    # sample 0: (1 + log2(4/3)) / 2; sample 1: clamped at 1e-7 -> (-log2(1e-7) + -log2(1 - 1e-7)) / 2
    assert loss[0].item() == pytest.approx(0.5 * (1 + math.log2(4 / 3)))
    assert loss[1].item() == pytest.approx(0.5 * (-math.log2(1e-7) - math.log2(1 - 1e-7)), rel=1e-5)


def test_training_loss_of_an_uninformed_model_is_one_bit():
    x0 = torch.bernoulli(torch.full((3, 4, 2, 2), 0.5))
    loss = training_loss(lambda x, t: torch.full_like(x, 0.5), BernoulliSchedule(), x0)
    assert loss.item() == pytest.approx(1.0)


def test_training_target_is_the_true_flip_indicator():
    """With the code-faithful process, flips only go 1 -> 0: a model predicting exactly that (flip =
    x0 (1 - x_t), known here because it is given x0) has a loss of ~0 bits."""
    x0 = torch.bernoulli(torch.full((4, 8, 4, 4), 0.5), generator=torch.Generator().manual_seed(1))
    oracle = lambda x_t, t: x0 * (1 - x_t)  # noqa: E731
    loss = training_loss(oracle, BernoulliSchedule(), x0, generator=torch.Generator().manual_seed(2))
    assert loss.item() < 1e-5


@pytest.mark.parametrize("forward, consistent", [("symmetric", True), ("code", False)])
def test_the_posterior_is_bayes_for_the_symmetric_forward_process_only(forward, consistent):
    """q(x_{t-1} = 1 | x_t, x_0) by Bayes' rule from each process's forward marginal at t-1 and its
    one-step kernel: the posterior the sampler uses is exactly that for the paper's symmetric
    process, and not for the 'code' process the official code runs (the term it drops), which is why
    the symmetric option exists."""
    schedule = BernoulliSchedule(forward=forward)
    x0 = torch.tensor([0.0, 1.0, 0.0, 1.0])
    x_t = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    for t in (1, 50, 300):
        a = float(schedule.alphas[t])
        prior = forward_probability(schedule, x0.double(), t - 1)  # P(x_{t-1} = 1 | x_0)
        if forward == "symmetric":  # P(x_t | x_{t-1}): keep the bit with alpha_t, else a fair coin
            from_one = a * x_t + (1 - a) / 2
            from_zero = a * (1 - x_t) + (1 - a) / 2
        else:  # a 1 stays 1 with alpha_t, a 0 stays 0
            from_one = a * x_t + (1 - a) * (1 - x_t)
            from_zero = 1 - x_t
        bayes = from_one * prior / (from_one * prior + from_zero * (1 - prior))
        used = posterior_probability(schedule, x0.double(), x_t.double(), t)
        assert torch.allclose(used, bayes, atol=1e-12) == consistent
