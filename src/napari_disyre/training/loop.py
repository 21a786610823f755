"""Training a DISYRE restoration network on healthy scans.

The recipe is the official one (method document, "Corruption" and "Optimiser"): a UNet predicts the
clean slice from its DAG-corrupted version at the corruption's timestep, MSE loss, AdamW (lr 1e-4,
betas 0.95/0.999, weight decay 1e-6), cosine schedule with warm-up, gradient clipping at 1, optional
EMA, bf16 autocast on CUDA. ``torchrun`` starts data-parallel training with no code change (each rank
draws its own examples; gradients are averaged by DistributedDataParallel).

The output folder is a checkpoint in the official layout (loadable by this package and by the
official code) plus ``disyre.json`` and a ``training/`` folder holding the configuration, a CSV log
and the resumable state (weights, optimiser, learning-rate schedule, EMA). Ctrl-C saves that state,
and ``resume=True`` continues exactly where it stopped: batch ``k`` of rank ``r`` is always drawn
from the seed ``(seed, r, k)``, in this process or in worker processes (``workers``).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint import Checkpoint, CheckpointInfo, build_unet, load_checkpoint, write_checkpoint_files
from ..detection import detect
from ..devices import resolve_device
from ..errors import DisyreError, InputError
from ..nifti import load_matching, load_scan
from ..outputs import atomic_output, refuse_existing
from ..preprocessing import Preprocessing
from ..schedule import Schedule
from .contrasts import check_same_contrast
from .dataset import CorruptedSlices, SliceBank, TrainingScan, training_batches
from .presets import get_preset

if TYPE_CHECKING:
    import torch

STATE_DIR = "training"
STATE_FILE = "state.pt"
LOG_FILE = "log.csv"
CONFIG_FILE = "config.json"
LOG_FIELDS = ("step", "loss", "lr", "val_loss", "elapsed_s", "examples_per_s")
HEALTHY_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999)


@dataclass
class TrainingConfig:
    """Everything that defines a training run (saved as ``training/config.json``).

    ``None`` fields take the preset's value. ``unet_overrides`` changes the preset's network (tests
    use a tiny one).
    """

    preset: str = "small"
    steps: int | None = None
    batch_size: int | None = None
    crop: int | None = None
    learning_rate: float = 1e-4
    adam_betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 1e-6
    adam_epsilon: float = 1e-8
    warmup_steps: int | None = None
    grad_clip: float = 1.0
    ema: bool = False
    ema_max_decay: float = 0.9999
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75
    validate_every: int = 500
    save_every: int = 1000
    log_every: int = 10
    validation_examples: int = 64
    seed: int = 0
    contrast: str | None = None
    spacing: tuple[float, float, float] | None = None
    orientation: str | None = None
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None  # processes making training batches (None: 0 on the CPU, more on a GPU)
    init: str | None = None  # a checkpoint to start from (fine-tuning): its network, weights, grid
    description: str = ""
    unet_overrides: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> TrainingConfig:
        """A copy with every preset-dependent field filled in."""
        preset = get_preset(self.preset)
        steps = self.steps or preset.steps
        return dataclasses.replace(
            self,
            steps=steps,
            batch_size=self.batch_size or preset.batch_size,
            crop=self.crop or preset.crop,
            warmup_steps=self.warmup_steps
            if self.warmup_steps is not None
            else min(preset.warmup_steps, steps // 10),
            spacing=self.spacing or preset.preprocessing.spacing,
            orientation=self.orientation or preset.preprocessing.orientation,
        )

    @property
    def preprocessing(self) -> Preprocessing:
        base = get_preset(self.preset).preprocessing
        return dataclasses.replace(
            base, spacing=self.spacing or base.spacing, orientation=self.orientation or base.orientation
        )

    @property
    def unet_config(self) -> dict[str, Any]:
        return {**get_preset(self.preset).unet, **self.unet_overrides}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        for key in ("adam_betas", "spacing"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class TrainingReport:
    """What a finished (or interrupted) run did."""

    output: Path
    steps_done: int
    first_loss: float
    last_loss: float
    last_val_loss: float | None
    seconds: float
    healthy_score_quantiles: dict[str, float]


def train(
    scans: Sequence[TrainingScan],
    validation: Sequence[TrainingScan],
    output: str | Path,
    config: TrainingConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    allow_mixed_contrasts: bool = False,
) -> TrainingReport:
    """Train a restoration network on healthy ``scans`` and save it to ``output``.

    ``validation`` scans (healthy, never trained on) give the validation loss and the distribution of
    anomaly scores on healthy voxels stored with the checkpoint. Inputs are checked before any work.
    ``on_step(step, loss)`` is called after every optimiser step (tests use it to interrupt).
    ``config.init`` fine-tunes an existing checkpoint (official or napari-disyre): its network,
    weights, schedule and preprocessing grid are kept, since new weights on another grid would
    undo what it learnt; the preset then sets only the optimisation defaults (crop, batch, steps).
    """
    import torch

    started = time.perf_counter()
    output = Path(output)
    config = config.resolved()
    _check_output(output, resume, overwrite)
    check_training_inputs(scans, validation, allow_mixed_contrasts=allow_mixed_contrasts)
    if config.workers is not None and config.workers < 0:
        raise DisyreError(f"workers must be 0 or more, not {config.workers}")
    dist = _Distributed.from_environment(config.device)
    if config.workers is None:
        config = dataclasses.replace(config, workers=auto_workers(dist.device, dist.world))
    start = load_checkpoint(config.init) if config.init else None
    spec = start.info.preprocessing if start is not None else config.preprocessing
    bank = SliceBank.from_scans(
        scans, spec, on_scan=_announce("training", len(scans), dist.is_main and progress)
    )
    val_bank = (
        SliceBank.from_scans(
            validation, spec, on_scan=_announce("validation", len(validation), dist.is_main and progress)
        )
        if validation
        else None
    )
    schedule = start.schedule if start is not None else Schedule()
    torch.manual_seed(config.seed)  # reproducible initial weights
    unet = start.unet if start is not None else build_unet(config.unet_config, f"preset {config.preset!r}")
    unet = unet.to(dist.device).train()
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=config.learning_rate,
        betas=config.adam_betas,
        weight_decay=config.weight_decay,
        eps=config.adam_epsilon,
    )
    from diffusers.optimization import get_cosine_schedule_with_warmup

    lr_schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    ema = _make_ema(unet, config)
    step = 0
    if resume:
        step, elapsed = _load_state(output / STATE_DIR / STATE_FILE, unet, optimizer, lr_schedule, ema)
        started -= elapsed  # wall times and the log count the earlier sessions too
    model = dist.wrap(unet)
    stream = CorruptedSlices(bank, schedule, (config.seed, dist.rank), crop=config.crop)
    batches = training_batches(
        stream, step, config.steps, config.batch_size, config.workers, pin_memory=dist.device.type == "cuda"
    )
    validation_set = _validation_set(val_bank, schedule, config) if val_bank is not None else None
    log = _TrainingLog(output / STATE_DIR / LOG_FILE, enabled=dist.is_main, resume=resume)
    if dist.is_main:
        (output / STATE_DIR).mkdir(parents=True, exist_ok=True)
        _write_json(output / STATE_DIR / CONFIG_FILE, {**config.to_dict(), "command": " ".join(sys.argv)})
    autocast = _training_autocast(dist.device, config.precision)
    bar = _progress_bar(config.steps, step, enabled=progress and dist.is_main)
    losses: list[float] = []
    window_losses: list[float] = []
    val_loss: float | None = None
    tick = time.perf_counter()
    try:
        while step < config.steps:
            corrupted, clean, timesteps = next(batches)
            loss = _optimisation_step(
                model, optimizer, lr_schedule, dist.device, autocast, corrupted, clean, timesteps, config
            )
            if ema is not None:
                ema.step(unet.parameters())
            step += 1
            losses.append(loss)
            window_losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(window_losses):.4f}")
            if on_step is not None:
                on_step(step, loss)
            validate_now = validation_set is not None and (
                step % config.validate_every == 0 or step == config.steps
            )
            if validate_now:
                val_loss = _validation_loss(unet, ema, validation_set, dist.device, autocast)
            if step % config.log_every == 0 or validate_now or step == config.steps:
                elapsed = time.perf_counter() - tick
                log.write(
                    step,
                    float(np.mean(window_losses)),
                    lr_schedule.get_last_lr()[0],
                    val_loss if validate_now else None,
                    time.perf_counter() - started,
                    len(window_losses) * config.batch_size * dist.world / max(elapsed, 1e-9),
                )
                window_losses, tick = [], time.perf_counter()
            if dist.is_main and step % config.save_every == 0 and step < config.steps:
                _save_state(output, step, time.perf_counter() - started, unet, optimizer, lr_schedule, ema)
                _export(output, unet, ema, schedule, config, spec, bank)
    except KeyboardInterrupt:
        if dist.is_main:
            _save_state(output, step, time.perf_counter() - started, unet, optimizer, lr_schedule, ema)
            print(f"\nInterrupted at step {step}; state saved. Continue with --resume.", file=sys.stderr)
        raise
    finally:
        bar.close()
        log.close()
    quantiles: dict[str, float] = {}
    if dist.is_main:
        _save_state(output, step, time.perf_counter() - started, unet, optimizer, lr_schedule, ema)
        quantiles = _export(
            output,
            unet,
            ema,
            schedule,
            config,
            spec,
            bank,
            validation=validation,
            wall=time.perf_counter() - started,
        )
    dist.close()
    return TrainingReport(
        output=output,
        steps_done=step,
        first_loss=float(np.mean(losses[: max(1, len(losses) // 10)])) if losses else float("nan"),
        last_loss=float(np.mean(losses[-max(1, len(losses) // 10) :])) if losses else float("nan"),
        last_val_loss=val_loss,
        seconds=time.perf_counter() - started,
        healthy_score_quantiles=quantiles,
    )


# -- input checks ---------------------------------------------------------------------------------


def check_training_inputs(
    scans: Sequence[TrainingScan], validation: Sequence[TrainingScan], *, allow_mixed_contrasts: bool = False
) -> None:
    """Refuse unusable training data before any work: no scans, unreadable or empty files, 4D
    files, masks on other grids, or scans of different contrasts."""
    if not scans:
        raise InputError(
            "no training scans were given (the folder is empty, or nothing matched the pattern)."
        )
    for scan in [*scans, *validation]:
        volume = load_scan(scan.path)
        for extra, what in ((scan.brain_mask, "brain mask"), (scan.exclude_label, "exclusion label")):
            if extra is not None:
                load_matching(extra, volume, what=what)
    if not allow_mixed_contrasts:
        check_same_contrast([s.path for s in [*scans, *validation]])


def _check_output(output: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (output / STATE_DIR / STATE_FILE).exists():
            raise DisyreError(
                f"{output}: nothing to resume (no {STATE_DIR}/{STATE_FILE}); start without --resume."
            )
        return
    if output.exists() and overwrite:
        import shutil

        shutil.rmtree(output)
    refuse_existing(output, overwrite=False)


# -- one optimisation step ------------------------------------------------------------------------


def _optimisation_step(
    model, optimizer, lr_schedule, device, autocast, corrupted, clean, timesteps, config
) -> float:
    import torch
    import torch.nn.functional as F

    x_t = torch.as_tensor(corrupted).to(device, non_blocking=True)  # numpy, or tensors from workers
    x_0 = torch.as_tensor(clean).to(device, non_blocking=True)
    t = torch.as_tensor(timesteps).to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext():
        prediction = model(x_t, t).sample
    loss = F.mse_loss(prediction.float(), x_0)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    lr_schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def auto_workers(device: torch.device, world: int) -> int:
    """Batch-making processes when none are asked for. On the CPU, 0: the cores are busy with the
    network. On an accelerator, this process's share of the cores minus one for the training loop,
    at most 8: one core made about 800 corrupted 96 x 96 crops a second here
    (``benchmarks/bench_training_data.py``), and without workers an H200 trained at 3-5 steps/s of 64."""
    if device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores // world - 1))


def _training_autocast(device: torch.device, precision: str) -> torch.dtype | None:
    import torch

    if precision == "float32" or device.type != "cuda":
        return None
    if precision in ("auto", "bfloat16"):
        return torch.bfloat16
    return torch.float16


def _make_ema(unet, config: TrainingConfig):
    if not config.ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(
        unet.parameters(),
        decay=config.ema_max_decay,
        use_ema_warmup=True,
        inv_gamma=config.ema_inv_gamma,
        power=config.ema_power,
    )


# -- validation -----------------------------------------------------------------------------------


def _validation_set(bank: SliceBank, schedule: Schedule, config: TrainingConfig):
    """A fixed set of corrupted validation crops, the same at every validation (seeded)."""
    stream = CorruptedSlices(bank, schedule, (config.seed, 10_000), crop=config.crop)
    return stream.batch(0, config.validation_examples)


def _validation_loss(unet, ema, validation_set, device, autocast) -> float:
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


# -- saving and resuming --------------------------------------------------------------------------


def _save_state(output: Path, step: int, elapsed: float, unet, optimizer, lr_schedule, ema) -> None:
    """``elapsed`` (seconds since the run first started) lets a resumed run report its whole wall time."""
    import torch

    state = {
        "step": step,
        "elapsed_s": elapsed,
        "unet": unet.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_schedule": lr_schedule.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
    }
    (output / STATE_DIR).mkdir(parents=True, exist_ok=True)
    with atomic_output(output / STATE_DIR / STATE_FILE, overwrite=True) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, unet, optimizer, lr_schedule, ema) -> tuple[int, float]:
    """Restore everything in place; returns the step reached and the wall time spent so far."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DisyreError(
            f"{path}: the training state cannot be read ({exc}); start a new run instead."
        ) from exc
    unet.load_state_dict(state["unet"])
    optimizer.load_state_dict(state["optimizer"])
    lr_schedule.load_state_dict(state["lr_schedule"])
    if ema is not None:
        if state.get("ema") is None:
            raise DisyreError(f"{path}: this run was trained without EMA; resume without --ema.")
        ema.load_state_dict(state["ema"])
    return int(state["step"]), float(state.get("elapsed_s", 0.0))


def _export(
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
) -> dict[str, float]:
    """Write the (EMA) network as an official-layout checkpoint with its metadata, in place."""
    import copy

    exported = copy.deepcopy(unet).cpu().float().eval()
    if ema is not None:
        ema.copy_to(exported.parameters())
    info = CheckpointInfo(
        contrast=config.contrast,
        preprocessing=spec,
        training=_training_record(config, bank, validation, wall),
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


def healthy_score_quantiles(checkpoint: Checkpoint, scans: Sequence[TrainingScan]) -> dict[str, float]:
    """Quantiles of the anomaly scores of healthy brain voxels (default settings of the checkpoint)."""
    scores = []
    for scan in scans:
        volume = load_scan(scan.path)
        mask = load_matching(scan.brain_mask, volume, what="brain mask") if scan.brain_mask else None
        result = detect(volume, checkpoint, brain_mask=mask, device="cpu", keep_restorations=False)
        region = result.foreground
        if scan.exclude_label is not None:
            region = region & ~(load_matching(scan.exclude_label, volume, what="exclusion label") > 0)
        scores.append(result.anomaly_map[region])
    pooled = np.concatenate(scores)
    return {f"{q:g}": float(np.quantile(pooled, q)) for q in HEALTHY_QUANTILES}


def _training_record(
    config: TrainingConfig, bank: SliceBank, validation: Sequence[TrainingScan], wall: float | None
) -> dict[str, Any]:
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
        "device": _device_description(resolve_device(config.device)),
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
    }


def _device_description(device: torch.device) -> str:
    """``cuda (NVIDIA H200)``: the accelerator's name, so that recorded wall times can be compared."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(device)


# -- logging --------------------------------------------------------------------------------------


class _TrainingLog:
    """The CSV training log; a resumed run appends to it."""

    def __init__(self, path: Path, *, enabled: bool, resume: bool):
        self.handle = None
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        append = resume and path.exists()
        self.handle = path.open("a" if append else "w", newline="")
        self.writer = csv.writer(self.handle)
        if not append:
            self.writer.writerow(LOG_FIELDS)

    def write(
        self, step: int, loss: float, lr: float, val_loss: float | None, elapsed: float, rate: float
    ) -> None:
        if self.handle is None:
            return
        self.writer.writerow(
            [
                step,
                f"{loss:.6f}",
                f"{lr:.3e}",
                "" if val_loss is None else f"{val_loss:.6f}",
                f"{elapsed:.1f}",
                f"{rate:.1f}",
            ]
        )
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, disable=not enabled, desc="training", unit="step", dynamic_ncols=True
    )


def _announce(what: str, total: int, enabled: bool) -> Callable[[int, TrainingScan], None] | None:
    if not enabled:
        return None
    return lambda i, scan: print(
        f"preparing {what} scan {i + 1}/{total}: {scan.name}", file=sys.stderr, flush=True
    )


def _write_json(path: Path, value: dict[str, Any]) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")


# -- distributed data parallel --------------------------------------------------------------------


@dataclass
class _Distributed:
    """torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK), or a single process."""

    world: int
    rank: int
    device: Any

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_name: str) -> _Distributed:
        import torch

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(1, 0, resolve_device(device_name))
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
        device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
        return cls(world, rank, device)

    def wrap(self, unet):
        if self.world == 1:
            return unet
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            unet, device_ids=[self.device.index] if self.device.type == "cuda" else None
        )

    def close(self) -> None:
        if self.world > 1:
            import torch

            torch.distributed.destroy_process_group()
