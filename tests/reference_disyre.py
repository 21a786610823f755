"""A straightforward re-statement of the documented DISYRE inference, for equality tests.

Written from ../shared/docs/disyre-method.md only, one slice and one window at a time, in torch
float32, without any code of the package: if the engine's batching, skipping or blending drifted from
the method, the two would disagree.
"""

from __future__ import annotations

import numpy as np
import torch


def schedule_sqrt_alphas_cumprod(T: int = 100) -> torch.Tensor:
    betas = torch.linspace(1e-3, 0.2, T, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0).sqrt()


def official_timesteps(S: int, T: int = 100) -> list[int]:
    return [int(t) for t in np.round(np.arange(T, 0, -T / S)).astype(np.int64) - 1]


@torch.no_grad()
def restore_window(unet, x: torch.Tensor, S: int, method: str, weight_foreground: bool, T: int = 100):
    """One window (h, w): returns (anomaly score, final x) per the document's per-step equations."""
    s = schedule_sqrt_alphas_cumprod(T).flip(0)
    image = x.clone()
    original = x.clone()
    score = torch.zeros_like(x)
    for t in official_timesteps(S, T):
        current = image if method == "multi-step-restoration" else original
        x0 = unet(current[None, None], torch.tensor([t])).sample[0, 0]
        score += (current - x0).abs()
        prev = t - T // S
        if prev <= 0:
            new = x0.clamp(0, 1)
        else:
            s_t, s_p = s[t], s[prev]
            x_T = (current - x0 * (1 - s_t)) / s_t
            new = (current - (x0 * (1 - s_t) + s_t * x_T) + (x0 * (1 - s_p) + s_p * x_T)).clamp(0, 1)
        if method == "multi-step-restoration":
            image = new
    score /= S
    if weight_foreground:
        score *= (original > 0).float().mean()
    final = image if method == "multi-step-restoration" else original
    score *= (final > 0).float()
    return score, final


def importance_map(p: tuple[int, int], sigma_scale: float = 0.125) -> torch.Tensor:
    axes = []
    for n in p:
        x = torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=torch.float32)
        axes.append(torch.exp(x**2 / (-2 * (n * sigma_scale) ** 2)))
    w = axes[0][:, None] * axes[1][None, :]
    return w.clamp(min=max(float(w.min()), 1e-3))


@torch.no_grad()
def restore_slice(unet, image: np.ndarray, S: int, method: str, weight_foreground: bool):
    """A whole 2D slice: directly if it is one window, else padded sliding windows with blending."""
    p = (
        tuple(unet.config.sample_size)
        if not isinstance(unet.config.sample_size, int)
        else (unet.config.sample_size,) * 2
    )
    x = torch.from_numpy(image.astype(np.float32))
    if tuple(x.shape) == p:
        score, final = restore_window(unet, x, S, method, weight_foreground)
        return score.numpy(), final.numpy()
    step = [int(0.25 * n) for n in p]
    size = []
    for d, n, st in zip(x.shape, p, step, strict=False):
        d = max(n, d)
        if d != n and (d - n) % st != 0:
            d = d + st - (d - n) % st
        size.append(d)
    before = [(sz - d) // 2 for sz, d in zip(size, x.shape, strict=False)]
    padded = torch.zeros(size)
    padded[before[0] : before[0] + x.shape[0], before[1] : before[1] + x.shape[1]] = x
    w = importance_map(p)
    num_s = torch.zeros(size)
    num_f = torch.zeros(size)
    den = torch.zeros(size)
    for y in range(0, size[0] - p[0] + 1, step[0]):
        for xx in range(0, size[1] - p[1] + 1, step[1]):
            win = padded[y : y + p[0], xx : xx + p[1]]
            score, final = restore_window(unet, win, S, method, weight_foreground)
            num_s[y : y + p[0], xx : xx + p[1]] += score * w
            num_f[y : y + p[0], xx : xx + p[1]] += final * w
            den[y : y + p[0], xx : xx + p[1]] += w
    crop = (slice(before[0], before[0] + x.shape[0]), slice(before[1], before[1] + x.shape[1]))
    return (num_s / den)[crop].numpy(), (num_f / den)[crop].numpy()
