"""Writing the trained network as a checkpoint, with what it was trained on and its healthy scores.

The export is the official layout plus ``disyre.json``. With validation scans, the anomaly scores of
their healthy brain voxels are run through the detection pipeline and their quantiles stored with the
checkpoint: that is where the suggested threshold of every later detection comes from.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint_files import check_finite_weights
from ..detection.pipeline import detect
from ..disyre.checkpoint import Checkpoint, CheckpointInfo, write_checkpoint_files
from ..disyre.schedule import Schedule
from ..runtime.devices import resolve_device
from ..scans.nifti import load_matching
from ..scans.preprocessing import Preprocessing
from .config import TrainingConfig
from .dataset import SliceBank, TrainingScan

if TYPE_CHECKING:
    import torch

    from ..detection.detectors import Detector

HEALTHY_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999)


def export_checkpoint(
    output: Path,
    unet,
    ema,
    schedule: Schedule,
    config: TrainingConfig,
    spec: Preprocessing,
    bank: SliceBank,
    *,
    validation: Sequence[TrainingScan] = (),
    wall: float | None = None,
    resumes: Sequence[dict] = (),
) -> dict[str, float]:
    """Write the (EMA) network as an official-layout checkpoint with its metadata, in place."""
    import copy

    exported = copy.deepcopy(unet).cpu().float().eval()
    if ema is not None:
        ema.copy_to(exported.parameters())
    check_finite_weights(exported.state_dict(), str(output), exporting=True)
    info = CheckpointInfo(
        contrast=config.contrast,
        contrasts=tuple(config.contrasts),
        preprocessing=spec,
        training={**training_record(config, bank, validation, wall), "resumes": list(resumes)},
        description=config.description,
    )
    checkpoint = Checkpoint(
        unet=exported, schedule=schedule, info=info, source=output, layout="napari-disyre"
    )
    quantiles: dict[str, float] = {}
    if validation:
        quantiles = healthy_score_quantiles(checkpoint, validation)
        checkpoint = checkpoint.with_info(healthy_score_quantiles=quantiles)
    write_checkpoint_files(output, checkpoint)
    return quantiles


def healthy_score_quantiles(checkpoint: Detector, scans: Sequence[TrainingScan]) -> dict[str, float]:
    """Quantiles of the anomaly scores of healthy brain voxels (default settings of the checkpoint,
    of either method; several contrasts: the combined map of each patient's contrasts)."""
    scores = []
    for scan in scans:
        loaded, volume = scan.reference()
        mask = load_matching(scan.brain_mask, volume, what="brain mask") if scan.brain_mask else None
        result = detect(loaded, checkpoint, brain_mask=mask, device="cpu", keep_restorations=False)
        region = result.foreground
        if scan.exclude_label is not None:
            region = region & ~(load_matching(scan.exclude_label, volume, what="exclusion label") > 0)
        scores.append(result.anomaly_map[region])
    pooled = np.concatenate(scores)
    return {f"{q:g}": float(np.quantile(pooled, q)) for q in HEALTHY_QUANTILES}


def training_record(
    config: TrainingConfig, bank: SliceBank, validation: Sequence[TrainingScan], wall: float | None
) -> dict[str, Any]:
    """The ``training`` block of ``disyre.json``: what the network saw, for how long, on what machine."""
    import torch

    return {
        "preset": config.preset,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "crop": config.crop,
        "ema": config.ema,
        "training_scans": bank.scan_names,
        "training_slices": len(bank),
        "validation_scans": [s.name for s in validation],
        "seed": config.seed,
        "initialised_from": config.init,
        "wall_time_s": round(wall, 1) if wall is not None else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "device": device_description(resolve_device(config.device)),
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
    }


def device_description(device: torch.device) -> str:
    """``cuda (NVIDIA H200)``: the accelerator's name, so that recorded wall times can be compared."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(device)
