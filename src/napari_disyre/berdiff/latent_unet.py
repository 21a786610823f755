"""The latent denoiser: a diffusers ``UNet2DModel`` whose output, after a sigmoid, is the per-bit
flip probability (method document §3.3).

diffusers expresses the official guided-diffusion network block for block: the same ResBlocks with
an additive time embedding (sinusoidal 128, cos half first, then 512-wide MLP), single-head attention
(``attention_head_dim`` = the block width), conv down/up-sampling, three ResBlocks per up level, the
middle ResBlock-attention-ResBlock, and GN-SiLU-conv at the end; the official configuration has the
same 36,034,432 parameters. The authors' files load into :mod:`.official_unet` instead, the same
network under the official names and order of operations (``LatentUNetConfig.network``). As in
the official network the output convolution starts at zero, so an untrained model predicts flip probability 0.5 everywhere (a loss of exactly 1 bit).
"""

from __future__ import annotations

from typing import Any

import torch

from .presets import LatentUNetConfig


def unet_kwargs(cfg: LatentUNetConfig) -> dict[str, Any]:
    """``UNet2DModel`` arguments for ``cfg``."""
    levels = range(len(cfg.block_out_channels))
    down = ["AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in levels]
    up = ["AttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(levels)]
    return {
        "sample_size": cfg.latent_size,
        "in_channels": cfg.bits,
        "out_channels": cfg.bits,
        "block_out_channels": tuple(cfg.block_out_channels),
        "layers_per_block": cfg.layers_per_block,
        "down_block_types": tuple(down),
        "up_block_types": tuple(up),
        "attention_head_dim": None,  # one head spanning the block's channels, as the official UNet
        "norm_num_groups": cfg.norm_groups,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }


def build_latent_unet(cfg: LatentUNetConfig) -> torch.nn.Module:
    """A float32 latent UNet of ``cfg.network`` with random weights and a zero output convolution."""
    if cfg.network == "guided-diffusion":
        from .official_unet import OfficialLatentUNet

        unet: torch.nn.Module = OfficialLatentUNet(cfg)
        last = unet.out[2]
    else:
        from diffusers import UNet2DModel

        unet = UNet2DModel(**unet_kwargs(cfg))
        last = unet.conv_out
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    return unet.float()


def flip_probability(unet: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """Per-bit flip probability ``sigmoid(unet(x_t, t))``, in float32 whatever the autocast; ``unet``
    is either network kind (diffusers wraps its logits in ``.sample``)."""
    if not torch.is_tensor(t) or t.ndim == 0:
        t = torch.full((x_t.shape[0],), int(t), device=x_t.device)
    logits = unet(x_t, t)
    return torch.sigmoid(getattr(logits, "sample", logits).float())
