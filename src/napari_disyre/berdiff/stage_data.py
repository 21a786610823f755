"""What the two training stages of ``train --method berdiff`` eat: every usable slice centred in the
autoencoder's square, batches drawn by (seed, step) so a resumed run sees the batches an
uninterrupted one would, and the frozen autoencoder's bit probabilities of every slice, computed once
for the diffusion stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from .autoencoder import BinaryAutoencoder


def square_slices(slices: Sequence[np.ndarray], size: int) -> np.ndarray:
    """(N, C, size, size): each slice, (H, W) (C = 1) or (C, H, W) (several contrasts), centred in a
    square of zeros (centre-cut where larger)."""
    channels = slices[0].shape[0] if len(slices) and slices[0].ndim == 3 else 1
    out = np.zeros((len(slices), channels, size, size), np.float32)
    for i, s in enumerate(slices):
        h, w = min(s.shape[-2], size), min(s.shape[-1], size)
        top, left = (s.shape[-2] - h) // 2, (s.shape[-1] - w) // 2
        at_y, at_x = (size - h) // 2, (size - w) // 2
        out[i, :, at_y : at_y + h, at_x : at_x + w] = s[..., top : top + h, left : left + w]
    return out


class SeededBatches:
    """``batches(step)``: a batch of rows of ``data`` drawn by a generator seeded by (seed, step), or
    (seed, step, rank) on the other ranks of torchrun, so a resumed run sees exactly the batches an
    uninterrupted one would."""

    def __init__(self, data: np.ndarray, size: int, seed: int, rank: int = 0):
        self.data, self.size, self.seed, self.rank = data, size, seed, rank

    def __call__(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step] + ([self.rank] if self.rank else []))
        return self.data[rng.integers(0, len(self.data), self.size)].astype(np.float32)


def encode_slices(
    ae: BinaryAutoencoder, images: np.ndarray, device: torch.device, batch: int = 64
) -> np.ndarray:
    """The frozen autoencoder's bit probabilities of every slice, float16 (the diffusion stage's cache)."""
    import torch

    ae = ae.to(device).eval()
    out = []
    with torch.no_grad():
        for a in range(0, len(images), batch):
            x = torch.from_numpy(images[a : a + batch]).to(device)
            out.append(ae.bit_probabilities(x).float().cpu().numpy().astype(np.float16))
    return np.concatenate(out)
