"""DISYRE inference the way the official pipeline runs it: the honest baseline for every speed-up.

Written from ../shared/docs/disyre-method.md and the description in issue 17 (own code; none of the
official repository's). The official pipeline is called once per volume with all of its slices that
have a non-zero voxel; it pads every slice, unfolds EVERY window of every slice (all-zero ones too)
into one tensor, and calls the network on chunks of ``sw_batch_size`` windows (320 in the official
evaluation notebook) in float32, each chunk running the whole S-step chain before the next chunk
starts; scores and restorations are blended with the Gaussian importance map by folding the windows
back. Everything stays on the device the network is on, as there.

The timesteps and cold-diffusion coefficients come from :class:`napari_disyre.disyre.schedule.Schedule`
(tested against the document's numbers on its own); padding, unfolding, chunking, the chain and the
blending are written here in plain torch, independently of the engine, so that
``tests/test_official_style.py`` comparing the two checks the engine's batching, skipping and
blending against a second implementation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_disyre.disyre.schedule import InferenceStep, Schedule

OFFICIAL_SW_BATCH_SIZE = 320


@torch.inference_mode()
def official_style_restore(
    slices: np.ndarray,
    unet,
    schedule: Schedule,
    steps: int,
    method: str = "mean-single-step",
    weight_foreground: bool = True,
    *,
    sw_batch_size: int = OFFICIAL_SW_BATCH_SIZE,
    overlap: float = 0.25,
    sigma_scale: float = 0.125,
) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly map and final restoration (both (N, H, W) float32) of a slice stack, officially."""
    device = next(unet.parameters()).device
    size = unet.config.sample_size
    window = (size, size) if isinstance(size, int) else tuple(size)
    stride = tuple(int(overlap * p) for p in window)
    plan = schedule.plan(steps, "official")
    stack = torch.from_numpy(np.asarray(slices, dtype=np.float32)).to(device)
    used = stack.flatten(1).ne(0).any(1)  # only slices with a non-zero voxel are restored
    anomaly = torch.zeros_like(stack)
    final = stack.clone()
    if used.any():
        score, restored = _volume(stack[used], unet, plan, steps, method, weight_foreground, window, stride, sw_batch_size, sigma_scale)  # fmt: skip
        anomaly[used], final[used] = score, restored
    return anomaly.cpu().numpy(), final.cpu().numpy()


def _volume(stack, unet, plan, steps, method, weight_foreground, window, stride, sw_batch_size, sigma_scale):
    n, height, width = stack.shape
    padded_size = [_tiled(d, p, s) for d, p, s in zip((height, width), window, stride, strict=True)]
    top, left = (padded_size[0] - height) // 2, (padded_size[1] - width) // 2
    padding = (left, padded_size[1] - width - left, top, padded_size[0] - height - top)
    image = F.pad(stack[:, None], padding)  # (n, 1, Hp, Wp)
    tiles = image.unfold(2, window[0], stride[0]).unfold(3, window[1], stride[1])  # (n, 1, ny, nx, h, w)
    per_slice = tiles.shape[2] * tiles.shape[3]
    windows = tiles.reshape(n * per_slice, 1, *window)  # all windows of all slices, slice-major
    scores, finals = [], []
    for chunk in windows.split(sw_batch_size):
        score, final = _chain(unet, chunk, plan, steps, method, weight_foreground)
        scores.append(score)
        finals.append(final)
    weight = _importance(window, sigma_scale, stack.device)

    def blend(values: torch.Tensor) -> torch.Tensor:
        columns = (values * weight).reshape(n, per_slice, -1).transpose(1, 2)
        total = F.fold(columns, padded_size, window, stride=stride)
        ones = weight.reshape(1, -1, 1).expand(1, -1, per_slice)
        norm = F.fold(ones, padded_size, window, stride=stride)
        return (total / norm)[:, 0, top : top + height, left : left + width]

    return blend(torch.cat(scores)), blend(torch.cat(finals))


def _chain(
    unet, x: torch.Tensor, plan: list[InferenceStep], steps: int, method: str, weight_foreground: bool
):
    """The whole S-step chain on one chunk of windows (k, 1, h, w), float32."""
    original = x
    current = x.clone()
    score = torch.zeros_like(x)
    for step in plan:
        source = current if method == "multi-step-restoration" else original
        t = torch.full((len(x),), step.t, dtype=torch.long, device=x.device)
        x0 = unet(source, t).sample
        score += (source - x0).abs()
        if step.final:
            updated = x0.clamp(0, 1)
        else:
            s_t, s_prev = step.s_t, step.s_prev
            x_T = (source - x0 * (1 - s_t)) / s_t
            updated = (source - (x0 * (1 - s_t) + s_t * x_T) + (x0 * (1 - s_prev) + s_prev * x_T)).clamp(0, 1)
        if method == "multi-step-restoration":
            current = updated
    score = score / steps  # S, even where the official schedule visits S + 1 timesteps
    if weight_foreground:
        score = score * original.gt(0).float().mean(dim=(1, 2, 3), keepdim=True)
    final = current if method == "multi-step-restoration" else original
    return score * final.gt(0).float(), final


def _tiled(d: int, p: int, s: int) -> int:
    """Padded length so that windows of ``p`` with step ``s`` tile ``d`` (at least one window)."""
    d = max(p, d)
    return d + (s - (d - p) % s) % s if d != p else d


def _importance(window, sigma_scale: float, device) -> torch.Tensor:
    axes = []
    for p in window:
        x = torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2
        axes.append(torch.exp(-(x**2) / (2 * (p * sigma_scale) ** 2)))
    weight = axes[0][:, None] * axes[1][None, :]
    return weight.clamp(min=max(float(weight.min()), 1e-3))
