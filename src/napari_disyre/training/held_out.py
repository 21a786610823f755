"""The validation loss of a training run: a fixed set of corrupted crops of the held-out healthy
scans, scored with the EMA weights when there are some (what the exported model will use)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..disyre.schedule import Schedule
from .config import TrainingConfig
from .dataset import CorruptedSlices, SliceBank


def validation_set(bank: SliceBank, schedule: Schedule, config: TrainingConfig):
    """A fixed set of corrupted validation crops, the same at every validation (seeded)."""
    stream = CorruptedSlices(bank, schedule, (config.seed, 10_000), crop=config.crop)
    return stream.batch(0, config.validation_examples)


def validation_loss(unet, ema, validation_set, device, autocast) -> float:
    import torch
    import torch.nn.functional as F

    corrupted, clean, timesteps = validation_set
    with _ema_weights(unet, ema):
        unet.eval()
        total = 0.0
        with torch.inference_mode():
            for start in range(0, len(corrupted), 16):
                x_t = torch.from_numpy(corrupted[start : start + 16]).to(device)
                t = torch.from_numpy(timesteps[start : start + 16]).to(device)
                with (
                    torch.autocast(device.type, dtype=autocast)
                    if autocast is not None
                    else contextlib.nullcontext()
                ):
                    prediction = unet(x_t, t).sample
                target = torch.from_numpy(clean[start : start + 16]).to(device)
                total += float(F.mse_loss(prediction.float(), target, reduction="sum"))
        unet.train()
    return total / clean.size


@contextlib.contextmanager
def _ema_weights(unet, ema) -> Iterator[None]:
    """Temporarily put the EMA weights into the network (no-op without EMA)."""
    if ema is None:
        yield
        return
    ema.store(unet.parameters())
    ema.copy_to(unet.parameters())
    try:
        yield
    finally:
        ema.restore(unet.parameters())
