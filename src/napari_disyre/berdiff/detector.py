"""Bernoulli diffusion behind the detection seam (:mod:`napari_disyre.detection.detectors`).

The detection pipeline hands over the model-grid slices it hands DISYRE's engine: (N, H, W) for a
one-contrast model, or (N, C, H, W) for a model of C contrasts (the authors' BraTS models take four:
T1, T1ce, T2, FLAIR, in the order the model was trained on). The autoencoder and then the latent UNet
halve each side, so the slices are zero-padded, centred, to at least the size the autoencoder was
trained on (``image_size``) and to a multiple of both halvings; the results are cut back to the
slices' own size. Restorations keep the input's layout: (N, H, W) in, (N, H, W) out; (N, C, H, W) in,
(N, C, H, W) out; the anomaly map (summed over contrasts) and the flip mask are (N, H, W).
Progress is reported as the engine's
:class:`~napari_disyre.restoration.Progress` (a "window" is a slice here), the result as its
:class:`~napari_disyre.restoration.Restoration` with the flip mask added.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import numpy as np
import torch

from ..restoration import Progress, Restoration
from ..runtime.sessions import LOADING_STAGE, choose_runtime
from .checkpoint import BerDiffModel
from .inference import InferenceSettings, restore_slices, with_channels

#: Reverse steps between two kept (decoded) restorations; the last step is always kept.
RESTORATION_EVERY = 10
DEFAULT_BATCH = 16


def padded_size(height: int, width: int, image_size: int, multiple: int) -> tuple[int, int]:
    """The smallest size >= max(side, image_size) that is a multiple of ``multiple``, per side."""
    return tuple(math.ceil(max(side, image_size) / multiple) * multiple for side in (height, width))  # type: ignore[return-value]


def size_multiple(model: BerDiffModel) -> int:
    """Slice sides must be multiples of this: the autoencoder's and then the latent UNet's halvings."""
    return model.autoencoder.config.downsampling * 2 ** (len(model.unet_config.block_out_channels) - 1)


def pad_slices(slices: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Centre (N, [C,] H, W) in zeros of (N, [C,] *size); returns the padded stack and where the
    slices sit in the last two axes."""
    h, w = slices.shape[-2:]
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    out = np.zeros((*slices.shape[:-2], *size), np.float32)
    box = (slice(top, top + h), slice(left, left + w))
    out[..., box[0], box[1]] = slices
    return out, box


def restore_for_detection(
    model: BerDiffModel,
    slices: np.ndarray,
    settings: InferenceSettings,
    *,
    device: torch.device,
    autocast: torch.dtype | None,
    batch_size: int | None,
    keep_restorations: bool,
    runtime: str = "torch",
) -> Generator[Progress, None, Restoration]:
    """Masked restoration of model-grid slices (N, H, W) or (N, C, H, W), every
    ``RESTORATION_EVERY``-th reverse step kept; exporting the networks for ONNX Runtime
    (``runtime``) is shown as a progress stage."""
    stack = with_channels(slices, model.autoencoder.config.in_channels)
    size = padded_size(*stack.shape[2:], model.autoencoder.config.image_size, size_multiple(model))
    padded, box = pad_slices(stack, size)
    layout = (lambda r: r[:, 0]) if np.ndim(slices) == 3 else (lambda r: r)
    batch = batch_size or DEFAULT_BATCH
    runtime = choose_runtime(runtime, device, autocast)
    if runtime == "onnxruntime":
        yield Progress(1, settings.noise_level, 0, len(slices), batch, stage=LOADING_STAGE)
    engine = restore_slices(
        padded,
        model.autoencoder,
        model.unet,
        model.schedule,
        settings,
        device=device,
        autocast=autocast,
        batch_size=batch,
        restoration_every=RESTORATION_EVERY if keep_restorations else 0,
        runtime=runtime,
    )

    def crop(stack: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(stack[..., box[0], box[1]], dtype=np.float32)

    while True:
        try:
            step = next(engine)
        except StopIteration as stop:
            result = stop.value
            break
        restoration = crop(layout(step.restoration)) if step.restoration is not None else None
        yield Progress(step.step, step.n_steps, step.slices_done, step.slices_total, batch, restoration)
    kept = [crop(layout(r)) for r in result.restorations] if keep_restorations else []
    return Restoration(
        anomaly_map=crop(result.anomaly_map),
        final=crop(layout(result.restoration)),
        restorations=kept,
        timesteps=result.timesteps if keep_restorations else [],
        windows_run=result.steps_run * len(stack),
        batch_size=batch,
        seconds=result.seconds,
        flip_mask=crop(result.flip_mask),
        runtime=result.runtime,
    )
