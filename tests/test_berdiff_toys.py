"""Hand-computed toys that show the masked Bernoulli loop is an anomaly detector, not bookkeeping:
an oracle flip model restores a corrupted block of a code, a block the 'code' forward process cannot
undo (0-bits turned to 1) stays as it is, and a tiny trained model scores an anomaly above healthy
tissue. The same loop is checked against the official code in benchmarks/berdiff_official_loop.py."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_disyre.berdiff.bernoulli import BernoulliSchedule  # noqa: E402
from napari_disyre.berdiff.inference import (  # noqa: E402
    InferenceSettings,
    SliceNoise,
    restore_codes,
    restore_slices,
)
from napari_disyre.evaluation.metrics import auroc  # noqa: E402
from napari_disyre.restoration import run_to_end  # noqa: E402

from .berdiff_tiny import TINY_AE, TINY_UNET, smooth_slices  # noqa: E402

BITS, SIDE = 8, 16
BLOCK = (slice(None), slice(None), slice(4, 8), slice(4, 8))


def healthy_code(seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(
        torch.full((1, BITS, SIDE, SIDE), 0.5), generator=torch.Generator().manual_seed(seed)
    )


def run_loop(flip_model, code: torch.Tensor, noise_level: int = 100, threshold: float = 0.6):
    """The project's reverse process to the end: (restored real-valued code, final mask, x_1)."""
    x1 = None
    for t, x0, state in restore_codes(  # noqa: B007 (x0 and state of the last step are the result)
        flip_model, BernoulliSchedule(), code, InferenceSettings(noise_level, threshold), SliceNoise(0, 1)
    ):
        if t == 1:
            x1 = state.x.clone()
    return x0, state.mask, x1


def block_labels() -> np.ndarray:
    labels = np.zeros((SIDE, SIDE), bool)
    labels[BLOCK[2:]] = True
    return labels


def test_an_oracle_flip_model_masks_and_restores_a_corrupted_block():
    """Healthy code h; a 4 x 4 block of it inverted. The oracle knows h: flip probability 0.9 where
    x_t differs from h, 0.05 elsewhere. The loop must mask the block and give h back there, so the
    per-position code error |x0 - code| finds the block."""
    h = healthy_code()
    corrupted = h.clone()
    corrupted[BLOCK] = 1 - h[BLOCK]
    oracle = lambda x, t: torch.where(x != h, 0.9, 0.05)  # noqa: E731
    x0, mask, _ = run_loop(oracle, corrupted)
    assert bool(mask[BLOCK].all())  # every inverted bit was flagged
    assert float((x0[BLOCK] - h[BLOCK]).abs().max()) == pytest.approx(0.1, abs=1e-6)  # |x_1 - 0.9|
    score = (x0 - corrupted).abs().sum(1)[0].numpy()
    block_auroc = auroc(score, block_labels())
    assert block_auroc > 0.95
    assert score[block_labels()].min() > score[~block_labels()].max()  # here even perfectly separated


def test_zero_bits_turned_to_one_are_what_the_code_forward_process_cannot_undo():
    """Under the 'code' forward process a 0-bit never becomes 1, so a 1 in x_t is never a flip: the
    exact oracle for a healthy code h is flip = (1 - x_t) * h. A block whose 1-bits were erased
    (h = 1, code 0) is masked and restored to h; a block whose 0-bits were set (h = 0, code 1) is
    never masked (flip = 0 there at every step), and the restored code there is x_1 itself, which
    the posterior has pulled back towards the code's 1s: the anomaly stays."""
    h = healthy_code(1)
    erased = (slice(None), slice(None), slice(2, 6), slice(2, 6))
    h[erased] = 1
    h[BLOCK[:2] + (slice(10, 14), slice(10, 14))] = 0
    code = h.clone()
    code[erased] = 0
    added = BLOCK[:2] + (slice(10, 14), slice(10, 14))
    code[added] = 1
    oracle = lambda x, t: (1 - x) * h  # noqa: E731
    x0, mask, x1 = run_loop(oracle, code)
    assert bool(mask[erased].all()) and torch.equal(x0[erased], h[erased])  # undone exactly
    assert not bool(mask[added].any())  # never flagged
    assert torch.equal(x0[added], x1[added])  # the unmasked last step returns x_1 there
    kept = float(x0[added].mean())
    assert kept > 0.9  # measured 1.0: every added 1 survives
    error_erased = float((x0 - code).abs()[erased].mean())
    error_added = float((x0 - code).abs()[added].mean())
    assert error_erased == 1.0 and error_added == pytest.approx(1 - kept)


def test_a_tiny_trained_model_scores_an_anomaly_above_healthy_tissue():
    """Train the tiny autoencoder and latent UNet on bright discs, then hide a dark 4 x 4 hole in a
    disc: the masked restoration's map must be higher in the hole than in the rest of the disc
    (measured: mean 0.319 in the hole against 0.056 in the rest of the disc, AUROC 0.841; seeded)."""
    from napari_disyre.berdiff.training import OptimiserSettings, train_autoencoder, train_latent_diffusion

    source = lambda k: smooth_slices(16, seed=k)[:, None]  # noqa: E731
    fast = dict(ema_decay=0.9, ema_every=1)
    ae = train_autoencoder(source, TINY_AE, OptimiserSettings(steps=150, learning_rate=3e-3, **fast)).ema
    unet = train_latent_diffusion(
        source, ae, TINY_UNET, BernoulliSchedule(), OptimiserSettings(steps=60, learning_rate=3e-3, **fast)
    ).ema
    test = smooth_slices(8, seed=10_000)
    brain = test > 0.3
    hole = np.zeros_like(brain)
    for i, image in enumerate(test):  # a dark square at each disc's brightest point
        cy, cx = np.unravel_index(np.argmax(image), image.shape)
        cy, cx = np.clip(cy, 2, 13), np.clip(cx, 2, 13)
        hole[i, cy - 2 : cy + 2, cx - 2 : cx + 2] = True
    test[hole] = 0.0
    result = run_to_end(
        restore_slices(test, ae, unet, BernoulliSchedule(), InferenceSettings(noise_level=50, threshold=0.6))
    )
    inside, healthy = result.anomaly_map[hole].mean(), result.anomaly_map[brain & ~hole].mean()
    assert inside > 3 * healthy
    assert auroc(result.anomaly_map[brain], hole[brain]) > 0.8
