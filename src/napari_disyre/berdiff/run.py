"""``napari-disyre train --method berdiff``: both stages on the data pipeline DISYRE trains on.

Scans go through :class:`~napari_disyre.training.dataset.SliceBank` (the preset's model grid,
intensity scaling, non-empty slices, ``--exclude-label-name``), exactly as for DISYRE. Each slice is
centred in (or cut to) the autoencoder's ``image_size`` square, so the diffusion stage can encode
every slice once with the frozen EMA autoencoder and draw codes from those cached bit probabilities.
Several contrasts (``--scan-name``, one folder per patient): a slice holds one channel per contrast,
the autoencoder takes them all, and ``berdiff.json`` names them in channel order, so that detection
asks for one scan per contrast exactly as for a DISYRE model of several contrasts.

The output folder is the checkpoint (``berdiff.json`` + two safetensors files, see
:mod:`~napari_disyre.berdiff.checkpoint`) plus ``training/``: ``state.pt`` (the running stage, its
step, model, EMA, optimiser and generator states, the trained autoencoder once stage 1 is done; read
back with ``weights_only=True``), ``log.csv`` (stage, step, loss, elapsed seconds) and
``config.json``. ``resume=True`` continues exactly where the last save stopped, across sessions.
Under ``torchrun`` each rank trains on its own batches (rank 0 draws those of a one-process run)
and DistributedDataParallel averages the gradients; only rank 0 writes files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint_files import check_finite_weights
from ..errors import DisyreError
from ..outputs import replacing_folder, write_json
from ..training.dataset import SliceBank, TrainingScan
from ..training.distributed import Distributed
from ..training.state import (
    STATE_DIR,
    STATE_FILE,
    check_output,
    read_state,
    training_inputs,
    write_state,
)
from ..validation import BerDiffOptions, check
from .autoencoder import BinaryAutoencoder
from .bernoulli import BernoulliSchedule
from .checkpoint import BerDiffModel, write_berdiff_files
from .gates import QualityGates, judge_run
from .inference import InferenceSettings
from .latent_unet import build_latent_unet
from .presets import BerDiffPreset, get_berdiff_preset
from .stage_data import SeededBatches, encode_slices, square_slices
from .training import (
    Checkpointing,
    Parallel,
    StageState,
    stage_settings,
    train_autoencoder,
    train_latent_diffusion,
)

LOG_FILE = "log.csv"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class BerDiffRunConfig:
    """What ``train --method berdiff`` was asked; None takes the preset's value."""

    preset: str = "small"
    ae_steps: int | None = None
    diffusion_steps: int | None = None
    ae_batch_size: int | None = None
    diffusion_batch_size: int | None = None
    spacing: tuple[float, float, float] | None = None
    noise_level: int = 100
    threshold: float = 0.6
    save_every: int = 250
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    contrast: str | None = None
    contrasts: tuple[str, ...] = ()  # several contrasts: the channels' names, in order
    description: str = ""
    progress: bool = True
    forward: str = "code"  # the forward process: "code" (the official code's) or "symmetric" (the paper's)
    code_size: int | None = None  # bits per latent position (None: the preset's; the paper's is 128)
    gate_unet_margin: float = 0.01  # bits the latent UNet must beat the per-channel trivial guess by
    gate_ae_error: float = 0.05  # bound on the autoencoder's held-out foreground error

    def schedule(self) -> BernoulliSchedule:
        return BernoulliSchedule(forward=self.forward)  # type: ignore[arg-type]

    def gates(self) -> QualityGates:
        return QualityGates(unet_margin_bits=self.gate_unet_margin, ae_max_error=self.gate_ae_error)

    def __post_init__(self) -> None:
        """Steps, batches, L and P checked before any scan is read (not after both stages trained)."""
        names = set(BerDiffOptions.model_fields)
        check(
            BerDiffOptions,
            {k: v for k, v in dataclasses.asdict(self).items() if k in names},
            "berdiff training",
        )

    def network_preset(self) -> BerDiffPreset:
        """The preset's networks, the autoencoder taking one channel per contrast and, with
        ``code_size``, that many bits per latent position (the latent UNet's channels follow)."""
        preset = get_berdiff_preset(self.preset, max(1, len(self.contrasts)))
        if self.code_size is None:
            return preset
        return dataclasses.replace(
            preset,
            autoencoder=dataclasses.replace(preset.autoencoder, codebook_bits=self.code_size),
            unet=dataclasses.replace(preset.unet, bits=self.code_size),
        )

    def preprocessing(self):
        from ..training.presets import PRESETS

        spec = PRESETS[self.preset].preprocessing  # the DISYRE preset of the same name: same grid
        return dataclasses.replace(spec, spacing=self.spacing) if self.spacing else spec


def train_berdiff(
    scans: Sequence[TrainingScan],
    validation: Sequence[TrainingScan],
    output: Path,
    config: BerDiffRunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> BerDiffModel:
    """Train the autoencoder, then the latent diffusion model; save the checkpoint into ``output``."""
    output = Path(output)
    inputs = training_inputs([*scans, *validation])
    check_output(output, resume, overwrite, steps_option="--diffusion-steps", inputs=inputs)
    preset = config.network_preset()
    state = _load_state(output) if resume else {}
    if resume:
        _check_same_config(output, config)
    spec = config.preprocessing()
    bank = SliceBank.from_scans(scans, spec)
    images = square_slices(bank.slices, preset.autoencoder.image_size)
    dist = Distributed.from_environment(config.device)
    with replacing_folder(output, overwrite and not resume) as folder:  # the old model kept until the end
        if dist.is_main:
            (folder / STATE_DIR).mkdir(parents=True, exist_ok=True)
            write_json(folder / STATE_DIR / CONFIG_FILE, dataclasses.asdict(config))
        log = _Log(
            folder / STATE_DIR / LOG_FILE if dist.is_main else None,
            append=resume,
            started=time.perf_counter() - state.get("elapsed_s", 0.0),
            enabled=config.progress and dist.is_main,
        )
        try:
            model = _train(folder, config, preset, spec, bank, images, validation, dist, state, log)
        finally:
            log.close()
            dist.close()
    model.source = output
    return model


def _train(output, config, preset, spec, bank, images, validation, dist, state, log) -> BerDiffModel:
    """Stage 1, the cache of bit probabilities, stage 2, the healthy-score quantiles, the files
    (rank 0's; the other ranks return the same model without writing)."""
    device = dist.device
    ranks = f" x {dist.world} ranks" if dist.world > 1 else ""
    if dist.is_main:
        print(
            f"{len(bank)} slices of {bank.n_volumes} scans, {images.shape[-1]}x{images.shape[-1]}, on {device}{ranks}"
        )
    ae = _autoencoder_stage(images, preset, config, dist, state, log, output)
    probabilities = encode_slices(ae, images, device)
    unet = _diffusion_stage(probabilities, ae, preset, config, dist, state, log, output)
    model = BerDiffModel(
        autoencoder=ae.float().cpu().eval(),
        unet=unet.float().cpu().eval(),
        unet_config=preset.unet,
        contrasts=config.contrasts,
        schedule=config.schedule(),
        inference=InferenceSettings(noise_level=config.noise_level, threshold=config.threshold),
        preprocessing=spec.to_dict(),
        training=_record(config, bank, validation, log.elapsed(), device, dist.world),
        description=config.description or f"{preset.name} preset, trained by napari-disyre",
        source=output,
    )
    if not dist.is_main:
        return model
    for name, network in (("autoencoder", model.autoencoder), ("latent UNet", model.unet)):
        check_finite_weights(network.state_dict(), f"{output} ({name})", exporting=True)
    if validation:
        from ..training.export import healthy_score_quantiles

        model.healthy_score_quantiles = healthy_score_quantiles(model, validation)
    gates = _quality_gates(model, config, spec, validation)
    write_berdiff_files(output, model)
    # the run's config as written at its start, marked "finished" (its steps ran: a rerun says so and
    # how to train further) and "done" only when it passed its quality gates
    write_json(
        output / STATE_DIR / CONFIG_FILE,
        {
            **dataclasses.asdict(config),
            "finished": True,
            "done": gates.passed,
            "quality_gates": gates.to_dict(),
        },
    )
    return model


def _quality_gates(model: BerDiffModel, config: BerDiffRunConfig, spec, validation):
    """Measure the gates on the validation scans' slices (:func:`~.gates.judge_run`)."""
    size = model.autoencoder.config.image_size
    held_out = square_slices(SliceBank.from_scans(validation, spec).slices, size) if validation else None
    return judge_run(model, held_out, config.gates())


def _autoencoder_stage(images, preset, config, dist, state, log, output) -> BinaryAutoencoder:
    settings = stage_settings(preset, "autoencoder", seed=config.seed, precision=config.precision)
    if config.ae_steps:
        settings = dataclasses.replace(settings, steps=config.ae_steps)
    if "autoencoder_done" in state:
        ae = BinaryAutoencoder(preset.autoencoder)
        ae.load_state_dict(state["autoencoder_done"])
        return ae
    batches = SeededBatches(
        images, config.ae_batch_size or preset.training.ae_batch_size, config.seed, dist.rank
    )
    resume = StageState(**state["stage"]) if state.get("stage_name") == "autoencoder" else None
    result = train_autoencoder(
        batches,
        preset.autoencoder,
        settings,
        device=dist.device,
        on_step=log.stage("autoencoder", settings.steps, resume),
        checkpointing=Checkpointing(
            resume, _saver(output, "autoencoder", log, state, dist), config.save_every
        ),
        parallel=_parallel(dist, find_unused_parameters=True),
    )
    state["autoencoder_done"] = result.ema.state_dict()
    if dist.is_main:
        write_state(output, {**state, "stage_name": "diffusion", "stage": None, "elapsed_s": log.elapsed()})
    return result.ema


def _diffusion_stage(probabilities, ae, preset, config, dist, state, log, output):
    settings = stage_settings(preset, "diffusion", seed=config.seed, precision=config.precision)
    if config.diffusion_steps:
        settings = dataclasses.replace(settings, steps=config.diffusion_steps)
    size = config.diffusion_batch_size or preset.training.diffusion_batch_size
    batches = SeededBatches(probabilities, size, config.seed + 1, dist.rank)
    resume = (
        StageState(**state["stage"])
        if state.get("stage_name") == "diffusion" and state.get("stage")
        else None
    )
    result = train_latent_diffusion(
        batches,
        ae,
        preset.unet,
        config.schedule(),
        settings,
        device=dist.device,
        model=build_latent_unet(preset.unet),
        on_step=log.stage("diffusion", settings.steps, resume),
        checkpointing=Checkpointing(resume, _saver(output, "diffusion", log, state, dist), config.save_every),
        encoded=True,
        parallel=_parallel(dist),
    )
    return result.ema


def _parallel(dist: Distributed, find_unused_parameters: bool = False) -> Parallel:
    """DDP for a stage (the autoencoder's L1 loss leaves some of its weights unused)."""
    return Parallel(lambda model: dist.wrap(model, find_unused_parameters=find_unused_parameters), dist.rank)


def _saver(output: Path, stage: str, log: _Log, state: dict[str, Any], dist: Distributed):
    """Rank 0 writes the state; the others' models are the same (DDP keeps them in step)."""
    if not dist.is_main:
        return None

    def save(stage_state: StageState) -> None:
        write_state(
            output, {**state, "stage_name": stage, "stage": stage_state.to_dict(), "elapsed_s": log.elapsed()}
        )

    return save


def _load_state(output: Path) -> dict[str, Any]:
    return read_state(output / STATE_DIR / STATE_FILE, method="berdiff")


def _check_same_config(output: Path, config: BerDiffRunConfig) -> None:
    # runs from before the forward-process option trained with the code process; before several
    # contrasts, with one
    recorded = {
        "forward": "code",
        "contrasts": [],
        "code_size": None,
        **json.loads((output / STATE_DIR / CONFIG_FILE).read_text()),
    }
    asked = json.loads(json.dumps(dataclasses.asdict(config)))
    changed = sorted(
        k
        for k in (
            "preset",
            "spacing",
            "seed",
            "ae_batch_size",
            "diffusion_batch_size",
            "forward",
            "contrasts",
            "code_size",
        )
        if recorded.get(k) != asked.get(k)
    )
    if changed:
        raise DisyreError(
            f"{output}: --resume with other settings than the run it continues ({', '.join(changed)}); "
            "give the same options, or start a new run."
        )


class _Log:
    """The CSV log (stage, step, loss, elapsed_s) and the progress bars; a resumed run appends."""

    def __init__(self, path: Path | None, *, append: bool, started: float, enabled: bool = True):
        """``path`` None (torchrun's other ranks) keeps no log."""
        self.started = started
        fresh = path is None or not (append and path.exists())
        target = Path(os.devnull if path is None else path)
        self.handle = target.open("w" if fresh else "a", newline="")  # noqa: SIM115 (closed by close())
        self.writer = csv.writer(self.handle)
        if fresh:
            self.writer.writerow(("stage", "step", "loss", "elapsed_s"))
        self.enabled = enabled

    def close(self) -> None:
        self.handle.close()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stage(self, name: str, total: int, resume: StageState | None):
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total,
            initial=resume.step if resume else 0,
            desc=name,
            dynamic_ncols=True,
            disable=not self.enabled,
        )

        def on_step(step: int, loss: float) -> None:
            self.writer.writerow((name, step, f"{loss:.6f}", f"{self.elapsed():.1f}"))
            self.handle.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if step == total:
                bar.close()

        return on_step


def _record(
    config: BerDiffRunConfig, bank: SliceBank, validation, wall: float, device, world: int = 1
) -> dict[str, Any]:
    import platform
    import sys

    from ..training.export import device_description

    preset = config.network_preset().training
    return {
        "method": "berdiff",
        "preset": config.preset,
        "contrast": config.contrast,
        "contrasts": list(config.contrasts),
        "ae_steps": config.ae_steps or preset.ae_steps,
        "diffusion_steps": config.diffusion_steps or preset.diffusion_steps,
        "training_scans": bank.scan_names,
        "training_slices": len(bank),
        "validation_scans": [s.name for s in validation],
        "seed": config.seed,
        "wall_time_s": round(wall, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "device": device_description(device),
        "ranks": world,
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
    }
