"""Tiny Bernoulli diffusion networks for fast tests (16 x 16 slices, a 4-bit 8 x 8 code)."""

from __future__ import annotations

from napari_disyre.berdiff.presets import AutoencoderConfig, LatentUNetConfig

TINY_AE = AutoencoderConfig(
    in_channels=1,
    image_size=16,
    nf=8,
    ch_mult=(1, 2),
    res_blocks=1,
    attn_resolutions=(),
    codebook_bits=4,
    emb_dim=8,
    norm_groups=4,
)
TINY_UNET = LatentUNetConfig(
    bits=4,
    latent_size=8,
    block_out_channels=(8, 16),
    layers_per_block=1,
    attention_levels=(1,),
    norm_groups=4,
)


def tiny_networks(seed: int = 0):
    """A random tiny autoencoder and latent UNet whose output is not the zero-initialised constant."""
    import torch

    from napari_disyre.berdiff.autoencoder import BinaryAutoencoder
    from napari_disyre.berdiff.latent_unet import build_latent_unet

    torch.manual_seed(seed)
    ae = BinaryAutoencoder(TINY_AE).eval()
    unet = build_latent_unet(TINY_UNET).eval()
    torch.nn.init.normal_(unet.conv_out.weight, std=0.3)  # an untrained model would predict 0.5 flat
    return ae, unet


def smooth_slices(n: int, size: int = 16, seed: int = 0):
    """Slices in [0, 1]: a bright disc on a dark background at random positions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        out[i] = np.clip(1.2 - np.hypot(yy - cy, xx - cx) / (size * 0.3), 0, 1)
    return out


def tiny_berdiff(**inference):
    """A tiny :class:`~napari_disyre.berdiff.checkpoint.BerDiffModel` (50-step schedule, L = 12,
    P = 0.55 unless ``inference`` says otherwise)."""
    from napari_disyre.berdiff.bernoulli import BernoulliSchedule
    from napari_disyre.berdiff.checkpoint import BerDiffModel
    from napari_disyre.berdiff.inference import InferenceSettings

    ae, unet = tiny_networks()
    return BerDiffModel(
        autoencoder=ae,
        unet=unet,
        unet_config=TINY_UNET,
        schedule=BernoulliSchedule(steps=50),
        inference=InferenceSettings(**{"noise_level": 12, "threshold": 0.55, "seed": 1, **inference}),
        preprocessing={"percentile_region": "foreground"},
        healthy_score_quantiles={"0.999": 0.2},
    )
