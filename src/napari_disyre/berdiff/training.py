"""Training the two stages of the Bernoulli diffusion detector on healthy 2D slices.

1. :func:`train_autoencoder`: the binarising autoencoder, L1 reconstruction of a sampled binary code
   (straight-through), Adam, EMA (official: 0.995 every 10 steps), autocast on CUDA (bfloat16 where
   supported). The official loss is L1 only in practice (LPIPS off, GAN weight 0 before step 30001,
   code loss weight 0, method document §2.3), so no discriminator is trained here.
2. :func:`train_latent_diffusion`: the latent UNet on codes sampled afresh from the frozen (EMA)
   autoencoder at every step, uniform timesteps, BCE in bits on the flip indicator, AdamW
   (lr 1e-4, no weight decay), EMA 0.999 every step. The official loop makes two optimiser steps per
   batch; here each step draws a new batch.

Both take a *batch source*: a callable ``source(step) -> (B, C, H, W)`` array in [0, 1] (preferred:
the batch of a step can be re-made, so a run can resume exactly) or any iterator of such arrays.
The diffusion stage can instead take the autoencoder's bit probabilities of each slice, computed once
(``encoded=True``): the frozen encoder then runs once per slice instead of once per step.
A stage resumes from a :class:`StageState` (model, EMA, optimiser and random-generator states at a
step), and hands one to ``on_save`` every ``save_every`` steps and at the end.
The project's data pipeline (model grid, intensity scaling, slice selection, excluded labels) plugs
in there; this module knows nothing of scans.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import DisyreError
from ..runtime.devices import training_autocast_dtype
from .autoencoder import BinaryAutoencoder
from .bernoulli import BernoulliSchedule, training_loss
from .latent_unet import build_latent_unet, flip_probability
from .presets import AutoencoderConfig, BerDiffPreset, LatentUNetConfig

if TYPE_CHECKING:
    from diffusers import UNet2DModel

BatchSource = Callable[[int], Any] | Iterable[Any]
StepCallback = Callable[[int, float], None]


@dataclass
class StageState:
    """Everything a stage needs to continue exactly where it stopped (tensors only: weights_only)."""

    step: int
    model: dict[str, Any]
    ema: dict[str, Any]
    optimizer: dict[str, Any]
    generator: Any  # torch.Generator.get_state()

    def to_dict(self) -> dict[str, Any]:
        return dict(
            step=self.step, model=self.model, ema=self.ema, optimizer=self.optimizer, generator=self.generator
        )


SaveCallback = Callable[[StageState], None]


@dataclass
class Checkpointing:
    """Resume from ``resume`` (None: a fresh start); give ``on_save`` a state every ``every`` steps."""

    resume: StageState | None = None
    on_save: SaveCallback | None = None
    every: int = 500


@dataclass
class Parallel:
    """Data-parallel training (torchrun): ``wrap`` puts the trained model in DistributedDataParallel,
    which averages the gradients of the ``world`` ranks; ``rank`` draws its own random noise."""

    wrap: Callable[[nn.Module], nn.Module] = lambda model: model
    rank: int = 0


class EMA:
    """Exponential moving average of a model's weights, kept in a frozen copy of the model.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the schedule of
    diffusers' ``EMAModel`` and of the latent-diffusion codebases). The official code has no warm-up,
    which is harmless over its 3 000 autoencoder updates but not over a short run: after the
    ``small`` preset's 200 updates at 0.995, 0.995^200 = 37 % of the average would still be the
    random initial weights, and the saved autoencoder would barely reconstruct anything.

    Not diffusers' ``EMAModel`` (which DISYRE training uses): that one starts from decay 0 rather
    than 0.1 and keeps shadow parameters only, while this stage saves and exports the averaged
    module itself (its state dict is the checkpoint's weights); switching would change both the
    bundled model's training and the saved resume state for no gain.
    """

    def __init__(self, model: nn.Module, decay: float, updates: int = 0) -> None:
        if not 0.0 <= decay < 1.0:
            raise DisyreError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = updates
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @property
    def current_decay(self) -> float:
        """The decay the next update uses."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.current_decay
        for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if mine.is_floating_point():
                mine.lerp_(theirs.detach(), weight)
            else:
                mine.copy_(theirs)
        self.updates += 1


@dataclass
class OptimiserSettings:
    """How one stage is optimised; defaults are the official autoencoder's except the step count."""

    steps: int
    learning_rate: float = 1.08e-4
    ema_decay: float = 0.995
    ema_every: int = 10
    weight_decay: float = 0.0
    precision: str = "auto"  # bfloat16 autocast on CUDA, float32 elsewhere (see devices.autocast_dtype)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.ema_every < 1 or self.learning_rate <= 0:
            raise DisyreError(
                f"steps ({self.steps}), ema_every ({self.ema_every}) and learning rate "
                f"({self.learning_rate}) must be positive"
            )


@dataclass
class StageResult:
    """A trained stage: the raw model, its EMA (the one to save and use), the loss of every step."""

    model: nn.Module
    ema: nn.Module
    losses: list[float] = field(default_factory=list)


def stage_settings(preset: BerDiffPreset, stage: str, **overrides: Any) -> OptimiserSettings:
    """The preset's optimisation of ``stage`` ("autoencoder" or "diffusion"), with ``overrides``:
    official EMA 0.995 every 10 steps for the autoencoder, 0.999 every step for the latent UNet."""
    defaults = preset.training
    if stage == "autoencoder":
        base = dict(steps=defaults.ae_steps, learning_rate=defaults.ae_learning_rate)
    elif stage == "diffusion":
        base = dict(
            steps=defaults.diffusion_steps,
            learning_rate=defaults.diffusion_learning_rate,
            ema_decay=0.999,
            ema_every=1,
        )
    else:
        raise DisyreError(f"unknown training stage {stage!r}; choose autoencoder or diffusion")
    return OptimiserSettings(**{**base, **overrides})


def batch_iterator(source: BatchSource, start: int = 0) -> Iterator[torch.Tensor]:
    """Float32 tensors (B, C, H, W) from a batch source, checked to lie in [0, 1]; a callable source
    starts at batch ``start`` (a resumed run), an iterator where it stands."""
    steps = (source(k) for k in itertools.count(start)) if callable(source) else iter(source)
    for k, batch in enumerate(steps):
        x = torch.as_tensor(np.asarray(batch, dtype=np.float32))
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DisyreError(
                f"training batch {k} must be finite slices (B, C, H, W) in [0, 1]; got shape "
                f"{tuple(x.shape)}, range {float(x.min()):.3g}..{float(x.max()):.3g}"
            )
        yield x


def train_autoencoder(
    source: BatchSource,
    config: AutoencoderConfig,
    settings: OptimiserSettings,
    *,
    device: torch.device | None = None,
    model: BinaryAutoencoder | None = None,
    on_step: StepCallback | None = None,
    checkpointing: Checkpointing | None = None,
    parallel: Parallel | None = None,
) -> StageResult:
    """Train (or continue training ``model``) the autoencoder on slices from ``source``."""
    device = device or torch.device("cpu")
    parallel = parallel or Parallel()
    torch.manual_seed(settings.seed)
    ae = (model or BinaryAutoencoder(config)).to(device).train()
    forward = parallel.wrap(ae)
    gen = _generator(device, settings.seed, parallel.rank)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != config.in_channels:
            raise DisyreError(
                f"the autoencoder takes {config.in_channels} channel(s), a batch has {x.shape[1]}"
            )
        return (forward(x, generator=gen).float() - x).abs().mean()

    optimizer = torch.optim.Adam(ae.parameters(), lr=settings.learning_rate)
    return _optimise(ae, optimizer, loss_fn, source, settings, device, on_step, gen, checkpointing, parallel)


def train_latent_diffusion(
    source: BatchSource,
    autoencoder: BinaryAutoencoder,
    config: LatentUNetConfig,
    schedule: BernoulliSchedule,
    settings: OptimiserSettings,
    *,
    device: torch.device | None = None,
    model: UNet2DModel | None = None,
    on_step: StepCallback | None = None,
    checkpointing: Checkpointing | None = None,
    encoded: bool = False,
    parallel: Parallel | None = None,
) -> StageResult:
    """Train the latent UNet to predict flip probabilities of codes of the frozen ``autoencoder``
    (``encoded``: the source yields its bit probabilities (B, bits, h, w) rather than slices)."""
    device = device or torch.device("cpu")
    if config.bits != autoencoder.config.codebook_bits:
        raise DisyreError(
            f"the latent UNet has {config.bits} channels but the autoencoder codes {autoencoder.config.codebook_bits} bits"
        )
    parallel = parallel or Parallel()
    torch.manual_seed(settings.seed)
    ae = autoencoder.to(device).eval().requires_grad_(False)
    unet = (model or build_latent_unet(config)).to(device).train()
    forward = parallel.wrap(unet)
    gen = _generator(device, settings.seed, parallel.rank)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p = x.float() if encoded else ae.bit_probabilities(x).float()
            code = torch.bernoulli(p, generator=gen)
        return training_loss(lambda xt, t: flip_probability(forward, xt, t), schedule, code, generator=gen)

    optimizer = torch.optim.AdamW(
        unet.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    return _optimise(
        unet, optimizer, loss_fn, source, settings, device, on_step, gen, checkpointing, parallel
    )


def _generator(device: torch.device, seed: int, rank: int, step: int = 0) -> torch.Generator:
    """The stage's noise: rank 0 from ``seed`` (a one-process run), other ranks from (seed, rank, step)."""
    if rank == 0 and step == 0:
        return torch.Generator(device=device).manual_seed(seed)
    mixed = int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(mixed)


def _optimise(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    source: BatchSource,
    settings: OptimiserSettings,
    device: torch.device,
    on_step: StepCallback | None,
    generator: torch.Generator,
    checkpointing: Checkpointing | None,
    parallel: Parallel,
) -> StageResult:
    """The loop both stages share: autocast forward, (scaled) backward, step, EMA, callback, save.
    Under torchrun every rank runs it; ``loss_fn`` goes through the DDP wrapper, so backward averages
    the gradients, and the saved state (rank 0's) holds the unwrapped model, identical on all ranks."""
    dtype = training_autocast_dtype(device, settings.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    keep = checkpointing or Checkpointing()
    first = 1
    if keep.resume is not None:
        model.load_state_dict(keep.resume.model)
        optimizer.load_state_dict(keep.resume.optimizer)
        first = keep.resume.step + 1
        if parallel.rank == 0:
            generator.set_state(keep.resume.generator)
        else:  # the state saved is rank 0's: the others start a stream of their own at this step
            generator.set_state(_generator(generator.device, settings.seed, parallel.rank, first).get_state())
    ema = EMA(model, settings.ema_decay, updates=(first - 1) // settings.ema_every)
    if keep.resume is not None:
        ema.model.load_state_dict(keep.resume.ema)
    result = StageResult(model=model, ema=ema.model)
    batches = batch_iterator(source, first - 1)

    def state(step: int) -> StageState:
        return StageState(
            step, model.state_dict(), ema.model.state_dict(), optimizer.state_dict(), generator.get_state()
        )

    for step in range(first, settings.steps + 1):
        x = next(batches, None)
        if x is None:
            raise DisyreError(f"the batch source ran out after {step - 1} batches ({settings.steps} needed)")
        x = x.to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(x)
        value = loss.item()
        if not math.isfinite(value):
            raise DisyreError(f"the training loss became {value} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if step % settings.ema_every == 0:
            ema.update(model)
        result.losses.append(value)
        if on_step is not None:
            on_step(step, value)
        if keep.on_save is not None and (step % keep.every == 0 or step == settings.steps):
            keep.on_save(state(step))
    model.eval()
    return result
