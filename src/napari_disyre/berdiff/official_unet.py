"""The authors' latent denoiser, a guided-diffusion-style UNet, written from the method document
(§3.3) with the official module names, so an official ``brats*.pt`` / ``emabrats*.pt`` state dict
loads strictly, tensor for tensor.

It computes what diffusers' ``UNet2DModel`` (:mod:`.latent_unet`) computes for the same
configuration, but in the official order of operations (a fused ``qkv`` 1-D convolution, q and k
each scaled by ``c^-1/4`` before their product, GroupNorm in float32), so its flip probabilities
equal the official network's bit for bit on the CPU, which a diffusers copy (scaled dot-product
attention) does not. The project's own checkpoints keep the diffusers network; ``berdiff.json``
records which one a folder holds (``latent_unet.network``).

Layout (levels ``l``, ``n`` res blocks per level): ``input_blocks.0`` a 3x3 conv; per level ``n``
blocks ``[ResBlock, (attention)]`` then, except at the last level, a ``[Downsample]`` block;
``middle_block`` = ResBlock, attention, ResBlock; ``output_blocks`` per level from the deepest,
``n + 1`` blocks ``[ResBlock on the concatenated skip, (attention), (Upsample on the last)]``;
``out`` = GN, SiLU, conv. The forward returns logits: the flip probability is their sigmoid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .presets import LatentUNetConfig


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input's dtype, as the official network does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class SiLU(nn.Module):
    """``x * sigmoid(x)`` spelled out: ``nn.SiLU``'s fused kernel rounds differently in the last bit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: the cosines, then the sines."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    angles = t[:, None].float() * torch.exp(exponent)[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class ResBlock(nn.Module):
    """GN, SiLU, conv; plus the time embedding (SiLU, linear); GN, SiLU, dropout, conv; plus a skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(groups, c_in), SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(SiLU(), nn.Linear(emb_dim, c_out))
        self.out_layers = nn.Sequential(
            GroupNorm32(groups, c_out), SiLU(), nn.Dropout(0.0), nn.Conv2d(c_out, c_out, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb).type(x.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the positions, with a fused ``qkv`` projection and a residual."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        q, k, v = torch.split(self.qkv(self.norm(flat)), c, dim=1)
        scale = 1 / math.sqrt(math.sqrt(c))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        h = self.proj_out(torch.einsum("bts,bcs->bct", weight, v))
        return (flat + h).reshape(b, c, *spatial)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepSequential(nn.Sequential):
    """Blocks run in order, each given the time embedding (the official ``TimestepEmbedSequential``)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x) if isinstance(block, nn.Conv2d) else block(x, emb)
        return x


class OfficialLatentUNet(nn.Module):
    """The official latent UNet for ``cfg`` (``block_out_channels[0]`` = the official ``num_channels``,
    ``block_out_channels / block_out_channels[0]`` = its ``channel_mult``)."""

    def __init__(self, cfg: LatentUNetConfig) -> None:
        super().__init__()
        base, g, n = cfg.block_out_channels[0], cfg.norm_groups, cfg.layers_per_block
        emb = 4 * base
        self.model_channels = base
        self.time_embed = nn.Sequential(nn.Linear(base, emb), SiLU(), nn.Linear(emb, emb))
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(cfg.bits, base, 3, padding=1))])
        skips, ch = [base], base
        last = len(cfg.block_out_channels) - 1
        for level, width in enumerate(cfg.block_out_channels):
            attend = level in cfg.attention_levels
            for _ in range(n):
                self.input_blocks.append(_res_level(ch, width, emb, g, attend))
                ch = width
                skips.append(ch)
            if level != last:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skips.append(ch)
        self.middle_block = TimestepSequential(
            ResBlock(ch, ch, emb, g), AttentionBlock(ch, g), ResBlock(ch, ch, emb, g)
        )
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(cfg.block_out_channels))):
            width = cfg.block_out_channels[level]
            for i in range(n + 1):
                block = _res_level(ch + skips.pop(), width, emb, g, level in cfg.attention_levels)
                ch = width
                if level and i == n:
                    block.append(Upsample(ch))
                self.output_blocks.append(block)
        self.out = nn.Sequential(GroupNorm32(g, ch), SiLU(), nn.Conv2d(ch, cfg.bits, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Flip-probability logits (B, bits, h, w) of codes ``x`` at timesteps ``t`` (B,)."""
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def _res_level(c_in: int, c_out: int, emb: int, groups: int, attend: bool) -> TimestepSequential:
    blocks: list[nn.Module] = [ResBlock(c_in, c_out, emb, groups)]
    if attend:
        blocks.append(AttentionBlock(c_out, groups))
    return TimestepSequential(*blocks)
