"""Sliding-window geometry of the official inference: padding, window origins and Gaussian blending.

Facts (method document): windows have the UNet's ``sample_size``; the step is ``int(overlap * size)``
with overlap 0.25 (a 32-pixel step, 75 % overlap, for 128); the slice is zero-padded symmetrically
(one extra pixel after when the padding is odd) to at least one window and so that windows tile it;
outputs are weighted by a Gaussian importance map (sigma = 0.125 x window size per axis, clamped
below at 1e-3), summed, and divided by the summed weights, then cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError


def sample_size_pair(sample_size: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    """The window (height, width) from a UNet's ``sample_size``, which diffusers stores as an int or a pair."""
    if isinstance(sample_size, int):
        return (sample_size, sample_size)
    size = tuple(int(s) for s in sample_size)
    if len(size) != 2:
        raise CheckpointError(f"sample_size must be an int or two ints, got {sample_size!r}")
    return size  # type: ignore[return-value]


@dataclass(frozen=True)
class WindowLayout:
    """Where the windows of one slice go. All slices of a volume share it."""

    image_size: tuple[int, int]
    window: tuple[int, int]
    padded_size: tuple[int, int]
    pad_before: tuple[int, int]
    origins: tuple[tuple[int, int], ...]  # top-left corners in padded coordinates, row-major
    importance: np.ndarray  # (h, w) float32 blending weights of one window
    weight_sum: np.ndarray  # (Hp, Wp) float32 summed weights, the blending normaliser

    @property
    def crop(self) -> tuple[slice, slice]:
        """Slices that cut the original image out of the padded one."""
        (py, px), (h, w) = self.pad_before, self.image_size
        return slice(py, py + h), slice(px, px + w)

    def pad(self, slices: np.ndarray) -> np.ndarray:
        """Zero-pad a stack of slices (N, H, W), or (N, C, H, W), to (N, Hp, Wp) or (N, C, Hp, Wp)."""
        (py, px), (hp, wp) = self.pad_before, self.padded_size
        h, w = self.image_size
        leading = ((0, 0),) * (slices.ndim - 2)
        return np.pad(slices, (*leading, (py, hp - h - py), (px, wp - w - px)))

    def blend(self, accumulated: np.ndarray) -> np.ndarray:
        """Normalise an accumulation of weighted windows (..., Hp, Wp) and crop it to (..., H, W)."""
        return (accumulated / self.weight_sum)[(..., *self.crop)]


def window_layout(
    image_size: tuple[int, int], window: tuple[int, int], overlap: float = 0.25, sigma_scale: float = 0.125
) -> WindowLayout:
    """Compute the official tiling of an ``image_size`` slice by ``window``-sized windows."""
    steps = [int(p * overlap) for p in window]
    if min(steps) < 1:
        raise ValueError(f"overlap {overlap} gives a window step below one pixel for windows of {window}")
    padded = []
    for d, p, s in zip(image_size, window, steps, strict=True):
        d = max(p, d)
        if d != p and (d - p) % s != 0:
            d = d + s - (d - p) % s
        padded.append(d)
    pad_before = tuple((dp - d) // 2 for dp, d in zip(padded, image_size, strict=True))
    ys = range(0, padded[0] - window[0] + 1, steps[0])
    xs = range(0, padded[1] - window[1] + 1, steps[1])
    origins = tuple((y, x) for y in ys for x in xs)
    importance = gaussian_importance(window, sigma_scale)
    weight_sum = np.zeros(padded, dtype=np.float32)
    for y, x in origins:
        weight_sum[y : y + window[0], x : x + window[1]] += importance
    return WindowLayout(
        image_size=tuple(image_size),  # type: ignore[arg-type]
        window=tuple(window),  # type: ignore[arg-type]
        padded_size=tuple(padded),  # type: ignore[arg-type]
        pad_before=pad_before,  # type: ignore[arg-type]
        origins=origins,
        importance=importance,
        weight_sum=weight_sum,
    )


def gaussian_importance(window: tuple[int, int], sigma_scale: float = 0.125) -> np.ndarray:
    """Separable Gaussian centred on the window (not normalised to 1), clamped below at 1e-3."""
    profiles = []
    for p in window:
        x = np.arange(-(p - 1) / 2.0, (p - 1) / 2.0 + 1, dtype=np.float32)
        sigma = np.float32(p * sigma_scale)
        profiles.append(np.exp(x**2 / (-2 * sigma**2)).astype(np.float32))
    importance = np.outer(profiles[0], profiles[1]).astype(np.float32)
    return np.maximum(importance, max(float(importance.min()), 1e-3)).astype(np.float32)
