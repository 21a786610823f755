"""The seam both detectors implement: what the detection pipeline asks of a loaded checkpoint.

A checkpoint is either a DISYRE restoration network (:class:`~napari_disyre.disyre.checkpoint.Checkpoint`,
``kind == "disyre"``) or a masked Bernoulli diffusion detector
(:class:`~napari_disyre.berdiff.checkpoint.BerDiffModel`, ``kind == "berdiff"``). Both say which
voxel grid and intensity scaling they want, hold healthy-score quantiles, and restore a stack of
model-grid slices in [0, 1] into per-step restorations and an anomaly map on the same stack (plus,
for Bernoulli diffusion, the flip mask).

The stack contract (:func:`restore_stack`): a one-channel detector gets (N, H, W) and returns
restorations (N, H, W) and a map (N, H, W), exactly as before several contrasts existed. A detector
of C > 1 channels (:func:`contrasts_of` names them, in order) gets (N, C, H, W), channel c holding
contrast c of every slice, each contrast scaled on its own; it returns restorations (N, C, H, W),
one map per channel in ``Restoration.channel_maps`` (N, C, H, W) when the method has them (DISYRE), and
ONE combined map (N, H, W) in ``anomaly_map`` (DISYRE: the mean over the channels; Bernoulli
diffusion: its own map, the squared error summed over the channels). :mod:`napari_disyre.detection.pipeline` does the rest
(scan to model grid, crop, slicing axis, back to the scan's grid) the same way for both, so the CLI,
the widget, training and evaluation never branch on the method.

Settings differ: DISYRE takes :class:`~napari_disyre.disyre.engine.RestorationSettings` (steps S, method),
Bernoulli diffusion :class:`~napari_disyre.berdiff.inference.InferenceSettings` (noise level L,
flip-probability threshold P). :func:`default_settings` gives a checkpoint's own, with overrides; an
override that belongs to the other method is an error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..checkpoint_files import channel_names, checkpoint_path
from ..errors import CheckpointError, DisyreError
from ..validation import DetectArguments, check

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..berdiff.checkpoint import BerDiffModel
    from ..berdiff.inference import InferenceSettings
    from ..disyre.checkpoint import Checkpoint
    from ..disyre.engine import RestorationSettings
    from ..restoration import Progress, Restoration
    from ..scans.preprocessing import Preprocessing

Detector = Union["Checkpoint", "BerDiffModel"]
Settings = Union["RestorationSettings", "InferenceSettings"]

DETECTOR_NAMES = {"disyre": "DISYRE", "berdiff": "masked Bernoulli diffusion"}
#: The options each method takes (and the CLI flags that set them), for the error naming a wrong one.
OPTIONS = {
    "disyre": {
        "steps": "--steps",
        "method": "--method",
        "spacing": "--timesteps",
        "weight_foreground": "--no-weight-foreground",
        "fast": "--fast",
    },
    "berdiff": {
        "noise_level": "--noise-level",
        "threshold": "--flip-threshold",
        "seed": "--seed",
        "reference": "--map-reference",
    },
}


def checkpoint_kind(path: str | Path) -> str:
    """``"berdiff"`` or ``"disyre"``, from the file names alone (torch-free, for the widget)."""
    from ..berdiff.layout import METADATA_FILE as BERDIFF_FILE
    from ..berdiff.layout import is_berdiff_folder
    from ..disyre.checkpoint import METADATA_FILE

    path = checkpoint_path(path)
    if path.is_file() or not is_berdiff_folder(path):
        return "disyre"
    if (path / METADATA_FILE).exists() or (path / "unet").is_dir():
        raise CheckpointError(
            f"{path}: holds both {BERDIFF_FILE} (Bernoulli diffusion) and DISYRE files ({METADATA_FILE}/unet/); "
            "a checkpoint folder holds one method: move one of them to its own folder."
        )
    return "berdiff"


def load_checkpoint(path: str | Path) -> Detector:
    """Load any supported checkpoint of either method; every problem is a :class:`CheckpointError`
    naming the file. The method is told from the files (``berdiff.json``: Bernoulli diffusion; a
    ``unet/`` folder or a ``.safetensors`` file: DISYRE); the result's ``kind`` and ``summary()`` say
    what was found."""
    if checkpoint_kind(path) == "berdiff":
        from ..berdiff.checkpoint import load_berdiff

        return load_berdiff(checkpoint_path(path))
    from ..disyre.checkpoint import load_disyre_checkpoint

    return load_disyre_checkpoint(path)


def checkpoint_fingerprint(detector: Detector) -> str:
    """A detector by its content (weights, configs, what changes a raw map), for caching results."""
    return detector.fingerprint()


def preprocessing_of(detector: Detector) -> Preprocessing:
    """The voxel grid, intensity scaling and slicing axis the detector was trained with."""
    return detector.info.preprocessing if detector.kind == "disyre" else detector.spec


def contrasts_of(detector: Detector) -> tuple[str, ...]:
    """The detector's input channels by contrast name, in order (one name for one channel).

    Both methods: the ``contrasts`` of ``disyre.json`` / ``berdiff.json``, else generic names
    (``channel1 ..`` for an official multi-channel network; see
    :func:`~napari_disyre.checkpoint_files.channel_names`)."""
    return detector.contrasts if detector.kind == "disyre" else detector.channel_names()


def read_contrasts(path: str | Path) -> tuple[str, ...]:
    """:func:`contrasts_of` from the checkpoint's files alone (torch-free: the widget asks as soon as
    a checkpoint is chosen, to show one layer picker per contrast)."""
    import json

    path = checkpoint_path(path)
    if checkpoint_kind(path) == "berdiff":
        from ..berdiff.layout import read_berdiff_metadata, recorded_contrasts

        meta = read_berdiff_metadata(path)
        return channel_names(recorded_contrasts(meta), meta["autoencoder"].get("in_channels", 1), str(path))
    from ..disyre.checkpoint import read_checkpoint_info

    info = read_checkpoint_info(path)
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            config = json.loads(handle.metadata()["napari_disyre.unet_config"])
    else:
        try:
            config = json.loads((path / "unet" / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path / 'unet' / 'config.json'}: unreadable UNet config ({exc})."
            ) from exc
    return channel_names(info.contrasts, int(config.get("in_channels", 1)), str(path), info.contrast)


def healthy_quantiles_of(detector: Detector) -> dict[str, float]:
    return (
        detector.info.healthy_score_quantiles
        if detector.kind == "disyre"
        else detector.healthy_score_quantiles
    )


def default_settings(detector: Detector, **overrides: Any) -> Settings:
    """The checkpoint's own defaults with ``overrides`` applied where they are not None.

    DISYRE: steps, method, foreground weighting from ``disyre.json`` (``fast=True`` also makes the
    default step count ``FAST_STEPS``; an explicit ``steps`` wins); Bernoulli diffusion: L, P and the
    seed from ``berdiff.json``.
    """
    check(DetectArguments, {"checkpoint": detector}, "default_settings")
    changes = {k: v for k, v in overrides.items() if v is not None}
    foreign = sorted(set(changes) - set(OPTIONS[detector.kind]))
    if foreign:
        flags = {flag for options in OPTIONS.values() for name, flag in options.items() if name in foreign}
        raise DisyreError(
            f"{', '.join(sorted(flags)) or ', '.join(foreign)} does not apply to a {DETECTOR_NAMES[detector.kind]} "
            f"checkpoint ({detector.name}); its options are {', '.join(OPTIONS[detector.kind].values())}."
        )
    if detector.kind == "berdiff":
        base: Any = detector.inference
    else:
        from ..disyre.engine import FAST_STEPS, RestorationSettings

        info = detector.info
        base = RestorationSettings(
            steps=FAST_STEPS if changes.get("fast") else info.steps,
            method=info.method,
            weight_foreground=info.weight_foreground,
        )
    return dataclasses.replace(base, **changes) if changes else base


def describe_settings(settings: Settings) -> str:
    """``S=4 mean-single-step`` or ``L=100, P=0.6``: for progress lines and reports."""
    if hasattr(settings, "noise_level"):
        against = ", against the reconstruction" if settings.reference == "reconstruction" else ""
        return f"L={settings.noise_level}, P={settings.threshold:g}{against}"
    return f"S={settings.steps} {settings.method}" + (" (fast)" if settings.fast else "")


def restore_stack(
    detector: Detector,
    slices: np.ndarray,
    settings: Settings,
    *,
    device: torch.device,
    autocast: torch.dtype | None,
    batch_size: int | None,
    keep_restorations: bool,
    keep_step_maps: bool = False,
    compile: bool = False,
    runtime: str = "torch",
) -> Generator[Progress, None, Restoration]:
    """Restore model-grid slices with either method; progress as the engine's.

    ``slices`` is (N, H, W) for a one-channel detector, (N, C, H, W) for C channels (module docstring).

    ``keep_step_maps`` and ``compile`` are DISYRE engine options: Bernoulli diffusion keeps no map per
    reverse step (its map is made once, from the final code) and runs eagerly. ``runtime`` (torch,
    onnxruntime, auto: ``runtime.sessions``) evaluates the networks of either method.
    """
    if detector.kind == "berdiff":
        from ..berdiff.detector import restore_for_detection

        restorer = restore_for_detection
    else:
        from ..disyre.engine import restore

        def restorer(checkpoint, slices, settings, **options):
            _check_steps(checkpoint, settings)
            return restore(
                slices,
                checkpoint.unet,
                checkpoint.schedule,
                settings,
                keep_step_maps=keep_step_maps,
                compile=compile,
                **options,
            )

    return (
        yield from restorer(
            detector,
            slices,
            settings,
            device=device,
            autocast=autocast,
            batch_size=batch_size,
            keep_restorations=keep_restorations,
            runtime=runtime,
        )
    )


def _check_steps(checkpoint: Checkpoint, settings: RestorationSettings) -> None:
    total = checkpoint.schedule.num_train_timesteps
    if settings.steps > total:
        raise DisyreError(
            f"{settings.steps} steps asked, but this checkpoint's schedule has only {total} timesteps: "
            f"choose 1 to {total}."
        )
