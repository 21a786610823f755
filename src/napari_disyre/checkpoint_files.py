"""What any checkpoint path and format header must be, for both methods.

A checkpoint is a folder or a ``.safetensors`` file that exists (``demo`` and ``demo-berdiff`` name the
bundled ones), and its metadata names its format and a version this install can read. Both methods'
loaders check these first, from here, so neither imports the other to do it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, DisyreError

if TYPE_CHECKING:
    import torch


def check_format(meta: dict[str, Any], name: str, version: int, source: str, what: str) -> None:
    """Refuse metadata that is not ``name`` or that a newer napari-disyre wrote (``what`` names it).

    Both checkpoint formats carry their name and version; refusing a newer version here, rather
    than reading the fields it knows, keeps an old install from giving a silently wrong map.
    """
    if meta.get("format") != name:
        raise CheckpointError(
            f"{source}: not a napari-disyre {what} file (format is {meta.get('format')!r})."
        )
    found = meta.get("format_version", 0)
    if not isinstance(found, int) or isinstance(found, bool):  # inf, "1", 1.5, true: not a version
        raise CheckpointError(
            f"{source}: format version {found!r} is not a whole number; the file is corrupt."
        )
    if found > version:
        raise CheckpointError(
            f"{source}: written by a newer napari-disyre (format version {found}, this one reads up to "
            f"{version}); upgrade napari-disyre to read it."
        )


def checkpoint_path(path: str | Path) -> Path:
    """``path`` if it can hold a checkpoint (an existing folder or .safetensors file; ``demo`` and
    ``demo-berdiff`` name the bundled models), else a CheckpointError."""
    from .sample_data import bundled_checkpoint

    path = bundled_checkpoint(path)
    if not path.exists():
        raise CheckpointError(
            f"{path}: checkpoint not found (give a checkpoint folder or .safetensors file, or demo or "
            "demo-berdiff for a bundled model).",
            title="Checkpoint not found",
        )
    if path.is_file() and path.suffix != ".safetensors":
        # the official Bernoulli diffusion code saves bare state dicts (.pt, .th) without their
        # network configuration: say how to convert them rather than guess a shape here
        raw = (
            " A bare PyTorch state dict (.pt, .th, .pth, such as the official Bernoulli diffusion "
            "code's) holds no network configuration and is not read directly: convert the official "
            "autoencoder and UNet pair with napari-disyre import-berdiff, or train with napari-disyre train."
            if path.suffix in {".pt", ".th", ".pth"}
            else ""
        )
        raise CheckpointError(
            f"{path}: not a checkpoint. Give a checkpoint folder (with model_index.json, unet/ and "
            "scheduler/), a Bernoulli diffusion folder (with berdiff.json) or a single .safetensors "
            f"file written by napari-disyre.{raw}",
            title="Not a checkpoint",
        )
    return path


def content_fingerprint(parts: list[Any], networks: Mapping[str, torch.nn.Module]) -> str:
    """A hash of a model's description (``parts``, JSON-able) and weights (each network's tensors under
    its key prefix): each method lists what makes its models what they are, and results cached under
    the hash (saved maps) are never mistaken for another model's."""
    digest = hashlib.sha256()
    digest.update(json.dumps(parts, sort_keys=True, default=str).encode())
    for prefix, network in networks.items():
        for name, tensor in sorted(network.state_dict().items()):
            digest.update(f"{prefix}{name}".encode())
            digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_finite_weights(state: Mapping[str, torch.Tensor], source: str, *, exporting: bool = False) -> None:
    """Refuse weights holding NaN or infinity (a training that diverged): every map they make is NaN,
    which thresholds to nothing and reads as "no anomaly". Both loaders and both exports call this."""
    bad = next((k for k, t in state.items() if t.is_floating_point() and not t.isfinite().all()), None)
    if bad is not None:
        raise CheckpointError(
            f"{source}: the weight {bad} holds NaN or infinite values: the training diverged, so the model "
            + ("is not exported" if exporting else "cannot be used")
            + ". Train again with a lower learning rate."
        )


#: Metadata files are a few kB; a larger one is not metadata (and json would read it whole).
MAX_JSON_BYTES = 16 * 2**20
#: Nesting a real metadata file has (a few levels); deeper is forged and would exhaust the stack.
MAX_JSON_DEPTH = 32


def read_json_object(path: Path, what: str, error: type[DisyreError] = CheckpointError) -> dict[str, Any]:
    """``path`` parsed as one JSON object: bounded in size and nesting, so that a forged file is
    refused with its reason rather than exhausting memory or the stack (RecursionError)."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise error(
                f"{path}: {size / 2**20:.0f} MB is far more than any {what} holds; the file is not one."
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} missing; the folder is incomplete.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the {what} ({exc}).") from None
    return parse_json_object(text, f"{path}", what, error)


def parse_json_object(
    text: str, source: str, what: str, error: type[DisyreError] = CheckpointError
) -> dict[str, Any]:
    """``text`` as one JSON object of bounded nesting (see :func:`read_json_object`)."""
    depth = deepest = 0
    for char in text:  # brackets inside strings over-count: a bound, not a parser
        depth += (char in "[{") - (char in "]}")
        deepest = max(deepest, depth)
    if deepest > MAX_JSON_DEPTH:
        raise error(
            f"{source}: nested {deepest} levels deep, more than any {what} ({MAX_JSON_DEPTH}); the file is corrupt."
        )
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"{source}: the {what} is not valid JSON ({exc}).") from None
    if not isinstance(value, dict):
        raise error(f"{source}: the {what} holds a JSON {type(value).__name__}, not an object.")
    return value


def channel_names(
    recorded: Sequence[str], channels: int, source: str, single: str | None = None
) -> tuple[str, ...]:
    """The names of a network's ``channels`` input channels, for either method: the metadata's
    ``recorded`` contrasts; else one channel named ``single`` (or "scan"), or C generic names
    ``channel1 .. channelC`` (official files carry no names). Metadata naming another number of
    contrasts, or one twice, is refused: the channels would be fed the wrong scans."""
    if not recorded:
        return (single or "scan",) if channels == 1 else tuple(f"channel{i + 1}" for i in range(channels))
    names = [c.lower() for c in recorded]
    if len(names) != channels or len(set(names)) != len(names) or not all(names):
        raise CheckpointError(
            f"{source}: the metadata names the contrasts {list(recorded)} but the network has {channels} "
            "input channel(s); it needs one distinct name per channel, in order. Use the checkpoint as it was saved."
        )
    return tuple(recorded)
