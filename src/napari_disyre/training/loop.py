"""Training a DISYRE restoration network on healthy scans.

The recipe is the official one (method document, "Corruption" and "Optimiser"): a UNet predicts the
clean slice from its DAG-corrupted version at the corruption's timestep, MSE loss, AdamW (lr 1e-4,
betas 0.95/0.999, weight decay 1e-6), cosine schedule with warm-up, gradient clipping at 1, optional
EMA, bf16 autocast on CUDA. ``torchrun`` starts data-parallel training with no code change (each rank
draws its own examples; gradients are averaged by DistributedDataParallel).

The output folder is a checkpoint in the official layout (loadable by this package and by the
official code) plus ``disyre.json`` and a ``training/`` folder holding the configuration, a CSV log
and the resumable state (weights, optimiser, learning-rate schedule, EMA). Ctrl-C (and SIGTERM, from
the CLI) saves that state, and ``resume=True`` continues exactly where it stopped: batch ``k`` of rank ``r`` is always drawn
from the seed ``(seed, r, k)``, in this process or in worker processes (``workers``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..disyre.checkpoint import load_disyre_checkpoint
from ..disyre.schedule import Schedule
from ..disyre.unet import build_unet, with_channels
from ..errors import DisyreError
from ..outputs import replacing_folder
from ..runtime.devices import training_autocast_dtype
from ..scans.preprocessing import Preprocessing
from .config import TrainingConfig
from .dataset import CorruptedSlices, SliceBank, TrainingScan, check_training_inputs, training_batches
from .distributed import Distributed, auto_workers
from .export import export_checkpoint
from .held_out import validation_loss, validation_set
from .resume import check_resume, run_record, save_record
from .state import (
    CONFIG_FILE,
    LOG_FILE,
    STATE_DIR,
    STATE_FILE,
    TrainingLog,
    check_output,
    load_state,
    read_state,
    save_state,
    training_inputs,
)


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
    started = time.perf_counter()
    output = Path(output)
    config = config.resolved()
    check_output(output, resume, overwrite, inputs=training_inputs([*scans, *validation], config.init))
    check_training_inputs(scans, validation, allow_mixed_contrasts=allow_mixed_contrasts)
    record = run_record(config, scans, validation)
    state = read_state(output / STATE_DIR / STATE_FILE) if resume else None  # the method's own run...
    if resume:  # ...with its settings and data, before any work
        config, record = check_resume(output / STATE_DIR / CONFIG_FILE, record, config)
    dist = Distributed.from_environment(config.device)
    if config.workers is None:
        config = dataclasses.replace(config, workers=auto_workers(dist.device, dist.world))
    with replacing_folder(output, overwrite and not resume) as folder:  # the old model kept until the end
        run = _Run.start(scans, validation, folder, config, dist, progress=progress, started=started)
        run.resumes, run.replacing = record.get("resumes", []), output if folder != output else None
        step = 0
        if state is not None:
            step, elapsed = load_state(
                state, output / STATE_DIR / STATE_FILE, run.unet, run.optimizer, run.lr_schedule, run.ema
            )
            run.started -= elapsed  # wall times and the log count the earlier sessions too
        if dist.is_main:
            save_record(folder, record)
        step, losses, val_loss = _optimise(run, step, resume=resume, progress=progress, on_step=on_step)
        quantiles: dict[str, float] = {}
        if dist.is_main:
            run.save(step)
            quantiles = run.export(validation=validation, wall=time.perf_counter() - run.started)
            save_record(folder, {**record, "finished": True})  # a rerun then says so, not "interrupted"
    dist.close()
    tenth = max(1, len(losses) // 10)
    return TrainingReport(
        output=output,
        steps_done=step,
        first_loss=float(np.mean(losses[:tenth])) if losses else float("nan"),
        last_loss=float(np.mean(losses[-tenth:])) if losses else float("nan"),
        last_val_loss=val_loss,
        seconds=time.perf_counter() - run.started,
        healthy_score_quantiles=quantiles,
    )


@dataclass
class _Run:
    """Everything a run trains, saves and exports: the network, its optimiser, data and schedule."""

    output: Path
    config: TrainingConfig
    dist: Distributed
    unet: Any
    optimizer: Any
    lr_schedule: Any
    ema: Any
    schedule: Schedule
    spec: Preprocessing
    bank: SliceBank
    val_bank: SliceBank | None
    started: float
    resumes: list[dict] = dataclasses.field(default_factory=list)  # settings changed by --resume
    replacing: Path | None = None  # the folder this run replaces when it completes (--overwrite)

    @classmethod
    def start(
        cls,
        scans: Sequence[TrainingScan],
        validation: Sequence[TrainingScan],
        output: Path,
        config: TrainingConfig,
        dist: Distributed,
        *,
        progress: bool,
        started: float,
    ) -> _Run:
        """Prepare the slices, build (or load, for ``config.init``) the network and its optimiser."""
        import torch
        from diffusers.optimization import get_cosine_schedule_with_warmup

        start = load_disyre_checkpoint(config.init) if config.init else None
        spec = start.info.preprocessing if start is not None else config.preprocessing
        announce = dist.is_main and progress
        bank = SliceBank.from_scans(scans, spec, on_scan=_announce("training", len(scans), announce))
        val_bank = (
            SliceBank.from_scans(validation, spec, on_scan=_announce("validation", len(validation), announce))
            if validation
            else None
        )
        torch.manual_seed(config.seed)  # reproducible initial weights
        unet = (
            with_channels(start.unet, config.channels, str(config.init))
            if start is not None
            else build_unet(config.unet_config, f"preset {config.preset!r}")
        )
        unet = unet.to(dist.device).train()
        optimizer = torch.optim.AdamW(
            unet.parameters(),
            lr=config.learning_rate,
            betas=config.adam_betas,
            weight_decay=config.weight_decay,
            eps=config.adam_epsilon,
        )
        lr_schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
        schedule = start.schedule if start is not None else Schedule()
        return cls(
            output, config, dist, unet, optimizer, lr_schedule, _make_ema(unet, config), schedule, spec, bank,
            val_bank, started,
        )  # fmt: skip

    def save(self, step: int) -> None:
        elapsed = time.perf_counter() - self.started
        save_state(self.output, step, elapsed, self.unet, self.optimizer, self.lr_schedule, self.ema)

    def export(self, **record: Any) -> dict[str, float]:
        return export_checkpoint(
            self.output, self.unet, self.ema, self.schedule, self.config, self.spec, self.bank,
            resumes=self.resumes, **record,
        )  # fmt: skip


def _optimise(
    run: _Run, step: int, *, resume: bool, progress: bool, on_step: Callable[[int, float], None] | None
) -> tuple[int, list[float], float | None]:
    """The optimisation loop from ``step`` to ``config.steps``: log, validate and save as configured.

    Returns the step reached, every loss and the last validation loss. Ctrl-C saves the state first.
    """
    config, dist = run.config, run.dist
    model = dist.wrap(run.unet)
    stream = CorruptedSlices(run.bank, run.schedule, (config.seed, dist.rank), crop=config.crop)
    batches = training_batches(
        stream, step, config.steps, config.batch_size, config.workers, pin_memory=dist.device.type == "cuda"
    )
    held_out = validation_set(run.val_bank, run.schedule, config) if run.val_bank is not None else None
    log = TrainingLog(run.output / STATE_DIR / LOG_FILE, enabled=dist.is_main, resume=resume)
    autocast = training_autocast_dtype(dist.device, config.precision)
    bar = _progress_bar(config.steps, step, enabled=progress and dist.is_main)
    losses: list[float] = []
    window_losses: list[float] = []
    val_loss: float | None = None
    tick = time.perf_counter()
    try:
        while step < config.steps:
            corrupted, clean, timesteps = next(batches)
            loss = _optimisation_step(
                model,
                run.optimizer,
                run.lr_schedule,
                dist.device,
                autocast,
                corrupted,
                clean,
                timesteps,
                config,
            )
            if run.ema is not None:
                run.ema.step(run.unet.parameters())
            if not math.isfinite(loss):
                raise _diverged(run, step, loss)
            step += 1
            losses.append(loss)
            window_losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(window_losses):.4f}")
            if on_step is not None:
                on_step(step, loss)
            validate_now = held_out is not None and (
                step % config.validate_every == 0 or step == config.steps
            )
            if validate_now:
                val_loss = validation_loss(run.unet, run.ema, held_out, dist.device, autocast)
            if step % config.log_every == 0 or validate_now or step == config.steps:
                elapsed = time.perf_counter() - tick
                log.write(
                    step,
                    float(np.mean(window_losses)),
                    run.lr_schedule.get_last_lr()[0],
                    val_loss if validate_now else None,
                    time.perf_counter() - run.started,
                    len(window_losses) * config.batch_size * dist.world / max(elapsed, 1e-9),
                )
                window_losses, tick = [], time.perf_counter()
            if dist.is_main and step % config.save_every == 0 and step < config.steps:
                run.save(step)
                run.export()
    except KeyboardInterrupt:
        if dist.is_main and run.replacing is not None:
            print(f"\nInterrupted at step {step}; {run.replacing} was left as it was.", file=sys.stderr)
        elif dist.is_main:
            run.save(step)
            print(f"\nInterrupted at step {step}; state saved. Continue with --resume.", file=sys.stderr)
        raise
    finally:
        bar.close()
        log.close()
    return step, losses, val_loss


def _diverged(run: _Run, step: int, loss: float) -> DisyreError:
    """The error for a non-finite loss: the step was not taken, so the weights are those of ``step``,
    the last good state; it is saved (a replacing run keeps the old folder instead)."""
    if run.replacing is not None:
        kept = f"{run.replacing} was left as it was"
    elif run.dist.is_main:
        run.save(step)
        kept = f"the last good state (step {step}) is saved in {run.output / STATE_DIR / STATE_FILE}"
    else:
        kept = "rank 0 saves the last good state"
    return DisyreError(
        f"{run.replacing or run.output}: the training loss became {loss} at step {step + 1} (learning rate "
        f"{run.config.learning_rate:g} too high?); training stopped and no model was exported; {kept}. "
        "Start again (--overwrite) with a lower --lr."
    )


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
    if torch.isfinite(loss):  # a non-finite loss or gradient is not stepped on: the weights stay good
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if not torch.isfinite(norm):
            loss = norm
        else:
            optimizer.step()
            lr_schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


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


# -- logging --------------------------------------------------------------------------------------


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
