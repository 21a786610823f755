"""The restoration network: a diffusers ``UNet2DModel`` built from its config, and weights fitted into it.

Checkpoints from elsewhere are checked before diffusers sees them (class, channels, block types), so
that a wrong file fails with the reason rather than deep inside diffusers; weights of pre-0.14
diffusers get today's attention names. Training builds its fresh networks here too.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..checkpoint_files import check_finite_weights
from ..errors import CheckpointError
from .checkpoint_checks import check_config_bounds
from .windows import sample_size_pair

if TYPE_CHECKING:
    import torch
    from diffusers import UNet2DModel

DOWN_BLOCKS = frozenset(
    {
        "DownBlock2D",
        "ResnetDownsampleBlock2D",
        "AttnDownBlock2D",
        "SkipDownBlock2D",
        "AttnSkipDownBlock2D",
        "DownEncoderBlock2D",
        "AttnDownEncoderBlock2D",
    }
)
UP_BLOCKS = frozenset(
    {
        "UpBlock2D",
        "ResnetUpsampleBlock2D",
        "AttnUpBlock2D",
        "SkipUpBlock2D",
        "AttnSkipUpBlock2D",
        "UpDecoderBlock2D",
        "AttnUpDecoderBlock2D",
    }
)
#: Contrasts one model may take as channels (BraTS has 4; more is not an MRI protocol).
MAX_CONTRASTS = 8
_LEGACY_ATTENTION = re.compile(r"^(.*attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
_LEGACY_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def validate_unet_config(config: dict[str, Any], source: str) -> None:
    """Refuse what DISYRE cannot run, with the reason: wrong class, channels or block types, sizes
    no real model has (:func:`check_config_bounds`)."""
    cls = config.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise CheckpointError(
            f"{source}: describes a {cls}; DISYRE checkpoints hold a diffusers UNet2DModel."
        )
    channels = (config.get("in_channels", 3), config.get("out_channels", 3))
    if channels[0] != channels[1] or not isinstance(channels[0], int) or not 1 <= channels[0] <= MAX_CONTRASTS:
        raise CheckpointError(
            f"{source}: the UNet has in_channels = {channels[0]} and out_channels = {channels[1]}, but DISYRE "
            f"restores each contrast of a slice, so it needs the same number in and out, 1 to {MAX_CONTRASTS} "
            "(one per MRI contrast). This checkpoint was made for something else."
        )
    for key, known in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        blocks = config.get(key)
        if not isinstance(blocks, list | tuple) or not blocks:
            raise CheckpointError(f"{source}: {key} is missing or empty.")
        unknown = [b for b in blocks if b not in known]
        if unknown:
            raise CheckpointError(
                f"{source}: unsupported UNet block type(s) {', '.join(map(repr, unknown))} in {key}; "
                f"supported: {', '.join(sorted(known))}."
            )
    check_config_bounds(config, source)


def build_unet(config: dict[str, Any], source: str) -> UNet2DModel:
    """A float32 UNet2DModel from its config (random weights until a state dict is loaded)."""
    validate_unet_config(config, source)
    from diffusers import UNet2DModel

    clean = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        unet = UNet2DModel.from_config(clean)
    except Exception as exc:  # diffusers raises assorted errors for inconsistent configs
        raise CheckpointError(
            f"{source}: the UNet config is inconsistent ({type(exc).__name__}: {exc})."
        ) from exc
    return unet.float().eval()


def load_weights(unet: UNet2DModel, state: dict[str, torch.Tensor], source: str) -> None:
    """Put ``state`` into ``unet``, renaming old attention keys; a mismatch is a CheckpointError saying which."""
    state = {_modern_key(k): v for k, v in state.items()}
    expected = unet.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            k = wrong_shape[0]
            details.append(
                f"{len(wrong_shape)} of the wrong shape (e.g. {k}: {tuple(state[k].shape)} "
                f"instead of {tuple(expected[k].shape)})"
            )
        raise CheckpointError(f"{source}: the weights do not fit the UNet config: {'; '.join(details)}.")
    check_finite_weights(state, source)
    unet.load_state_dict(state, strict=True)


def _modern_key(key: str) -> str:
    """Rename attention weights of pre-0.14 diffusers (query/key/value/proj_attn) to today's names."""
    match = _LEGACY_ATTENTION.match(key)
    if match is None:
        return key
    prefix, old, kind = match.groups()
    return f"{prefix}.{_LEGACY_NAMES[old]}.{kind}"


def unet_config_dict(unet: UNet2DModel) -> dict[str, Any]:
    """The UNet's config as the official pipeline expects it (``sample_size`` as a list)."""
    import diffusers

    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    config["sample_size"] = list(sample_size_pair(config.get("sample_size", 128)))
    for key, value in list(config.items()):
        if isinstance(value, tuple):
            config[key] = list(value)
    return {"_class_name": "UNet2DModel", "_diffusers_version": diffusers.__version__, **config}


def with_channels(unet: UNet2DModel, channels: int, source: str) -> UNet2DModel:
    """``unet`` for ``channels`` contrasts: itself when it has them; a one-channel network widened to
    start a C-channel one from what it learnt (fine-tuning a healthy T1 model for FLAIR + T2 + ...).

    The first layer's weights are repeated across the C input channels and divided by C, so that C
    identical channels give exactly the one-channel network's response; the last layer's weights and
    bias are repeated across the C output channels, so each channel starts as that restoration. Any
    other channel count is refused: which input would map to which?
    """
    import torch

    have = unet.config.in_channels
    if have == channels:
        return unet
    if have != 1:
        raise CheckpointError(
            f"{source}: a network of {have} channels cannot start one of {channels}; start from a "
            f"one-channel checkpoint or one of {channels} channels."
        )
    config = {**unet_config_dict(unet), "in_channels": channels, "out_channels": channels}
    wide = build_unet(config, source)
    state = unet.state_dict()
    state["conv_in.weight"] = state["conv_in.weight"].repeat(1, channels, 1, 1) / channels
    state["conv_out.weight"] = state["conv_out.weight"].repeat(channels, 1, 1, 1)
    state["conv_out.bias"] = state["conv_out.bias"].repeat(channels)
    with torch.no_grad():
        wide.load_state_dict(state, strict=True)
    return wide
