"""The binarising autoencoder: image -> per-bit probabilities -> binary code -> image (method doc §2).

The encoder halves the slice ``len(ch_mult) - 1`` times and ends in ``emb_dim`` channels; the
quantiser maps them to ``codebook_bits`` probabilities with a 1x1 convolution and a sigmoid; a code
``b`` (sampled, as the official code does at training AND test time) is embedded as ``sum_n b_n E[n]``
and the generator decodes it. Training passes ``b`` forward and the gradient through the
probabilities (straight-through).

Module and parameter names are those of the official state dict with its ``ae.`` prefix removed
(``encoder.blocks.{i}``, ``quantize.proj.0``, ``quantize.embed``, ``generator.blocks.{i}``,
``generator.logsigma``), so an official ``binaryae_ema_*.th`` loads with :func:`load_official_state`.
The ``logsigma`` head is never used by the method; it is kept only so those files load strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint_files import check_finite_weights
from ..errors import CheckpointError
from .presets import AutoencoderConfig

OFFICIAL_PARTS = ("encoder", "quantize", "generator")


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """GN, SiLU, conv, GN, SiLU, conv, plus a skip; the 1x1 ``conv_out`` exists even when unused,
    because the official state dict always has it."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_out = nn.Conv2d(c_in, c_out, 1)
        self.project = c_in != c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_out(x) if self.project else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the positions of a feature map, with a residual."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In the official order of operations (product, then scale, then softmax), so that an
        official autoencoder's codes and images come out bit for bit."""
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (f(n).reshape(b, c, h * w) for f in (self.q, self.k, self.v))
        weight = torch.softmax(torch.bmm(q.transpose(1, 2), k) * int(c) ** -0.5, dim=2)
        return x + self.proj_out(torch.bmm(v, weight.transpose(1, 2)).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Pad right and bottom by one, then a stride-2 3x3 convolution (no padding)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        g, res = cfg.norm_groups, cfg.image_size
        blocks: list[nn.Module] = [nn.Conv2d(cfg.in_channels, cfg.nf, 3, padding=1)]
        c_in = cfg.nf
        for level, mult in enumerate(cfg.ch_mult):
            c_out = cfg.nf * mult
            for _ in range(cfg.res_blocks):
                blocks.append(ResBlock(c_in, c_out, g))
                c_in = c_out
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(c_in, g))
            if level != len(cfg.ch_mult) - 1:
                blocks.append(Downsample(c_in))
                res //= 2
        blocks += [ResBlock(c_in, c_in, g), AttnBlock(c_in, g), ResBlock(c_in, c_in, g)]
        blocks += [_norm(c_in, g), nn.Conv2d(c_in, cfg.emb_dim, 3, padding=1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run(self.blocks, x)


class Generator(nn.Module):
    """Decoder, ``norm_first`` variant: the embedding is normalised before the first convolution."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        c_in = cfg.nf * cfg.ch_mult[-1]
        res = cfg.latent_size
        blocks: list[nn.Module] = [_norm(cfg.emb_dim, g), nn.Conv2d(cfg.emb_dim, c_in, 3, padding=1)]
        blocks += [ResBlock(c_in, c_in, g), AttnBlock(c_in, g), ResBlock(c_in, c_in, g)]
        for level in reversed(range(len(cfg.ch_mult))):
            c_out = cfg.nf * cfg.ch_mult[level]
            for _ in range(cfg.res_blocks):
                blocks.append(ResBlock(c_in, c_out, g))
                c_in = c_out
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(c_in, g))
            if level != 0:
                blocks.append(Upsample(c_in))
                res *= 2
        blocks += [_norm(c_in, g), nn.Conv2d(c_in, cfg.in_channels, 3, padding=1)]
        self.blocks = nn.ModuleList(blocks)
        # Unused by the method; present in official state dicts, so kept for strict loading.
        self.logsigma = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, padding=1), nn.ReLU(), nn.Conv2d(c_in, cfg.in_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run(self.blocks, x)


def _run(blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """The blocks in sequence, as listed in the method document (§2.2): no activation between the
    final GroupNorm and the last convolution, as in the official network."""
    for block in blocks:
        x = block(x)
    return x


class BinaryQuantizer(nn.Module):
    """Per-bit probabilities (1x1 conv + sigmoid) and the embedding that codes are decoded from."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cfg.emb_dim, cfg.codebook_bits, 1), nn.Sigmoid())
        self.embed = nn.Embedding(cfg.codebook_bits, cfg.emb_dim)

    def embed_code(self, code: torch.Tensor) -> torch.Tensor:
        """``sum_n code_n E[n]``: codes may be real-valued (the last inference step feeds x0 in [0,1])."""
        return torch.einsum("bnhw,nd->bdhw", code, self.embed.weight)


class BinaryAutoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quantize = BinaryQuantizer(cfg)
        self.generator = Generator(cfg)

    def bit_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """P(bit = 1) for each latent bit, (B, bits, h, w), from slices (B, C, H, W) in [0, 1]."""
        return self.quantize.proj(self.encoder(x))

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) from a binary or soft code (B, bits, h, w); not clamped."""
        return self.generator(self.quantize.embed_code(code))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training reconstruction: a sampled code goes forward, gradients flow through the
        probabilities (straight-through estimator)."""
        p = self.bit_probabilities(x)
        code = torch.bernoulli(p.detach(), generator=generator)
        return self.decode(p + (code - p).detach())


def load_official_state(path: str | Path, model: BinaryAutoencoder) -> None:
    """Load an official ``binaryae[_ema]_{step}.th`` into ``model`` without unpickling code.

    Keeps the ``ae.encoder/quantize/generator`` entries (the file also holds the discriminator and
    LPIPS weights), strips ``ae.``, and loads strictly.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusal, truncation, zip errors
        raise CheckpointError(
            f"{path}: cannot be read as plain tensors ({type(exc).__name__}: {exc})."
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}.")
    kept = {k.removeprefix("ae."): v for k, v in state.items() if any(part in k for part in OFFICIAL_PARTS)}
    if not kept:
        raise CheckpointError(f"{path}: no ae.encoder/quantize/generator weights; not a binary AE file.")
    load_strict(model, kept, str(path))


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` or say, as a CheckpointError, which keys or shapes disagree."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
        parts += (
            [f"{len(wrong)} of the wrong shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)})"]
            if wrong
            else []
        )
        raise CheckpointError(f"{source}: the weights do not fit the network: {'; '.join(parts)}.")
    check_finite_weights(state, source)
    model.load_state_dict(state, strict=True)
