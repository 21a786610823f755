"""Masked anomaly inference (method document §4.1): encode, noise to level L, denoise with a growing
mask of the bits whose flip probability exceeds P, decode, compare.

For each reverse step t = L-1, ..., 1 (L network calls in all, counting the last; the noise is added
at index L itself, the official off-by-one):

* flip = sigmoid(unet(x_t, t)); x0 = |x_t - flip|;
* mask |= flip > P  (a union: it only grows);
* x0_mixed = mask * x0 + (1 - mask) * code  (the prediction inside the mask, the slice's own code
  outside);
* x_{t-1} ~ Bernoulli(posterior(x0_mixed, x_t, t)).

At t = 0 the result is the real-valued, unmasked x0 = |x_1 - flip(x_1, 0)|, decoded and clamped to
[0, 1]; the anomaly map is the squared difference summed over channels: with the input (the official
map, ``reference="input"``), or with the decoded code the restoration started from
(``reference="reconstruction"``), where the autoencoder's own reconstruction error cancels and only
what the latent diffusion changed remains (an autoencoder trained briefly is the map otherwise).

Departures from the official script, on purpose: the mask is built for every slice of a batch from
its own flip probabilities (the official code thresholds batch element 0 and applies that mask to
the whole batch, so it is right only with batch 1); every random draw of slice i (its code, its
noising, each posterior sample) comes from its own CPU generator seeded by (seed, i), so the random
draws depend on the seed but not on the batch size or the device (the maps then agree up to the
float rounding of batched convolutions).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..errors import DisyreError, InputError
from ..runtime.devices import inference_context
from ..runtime.sessions import choose_runtime, tensor_call
from ..validation import InferenceOptions, check
from .autoencoder import BinaryAutoencoder
from .bernoulli import (
    BernoulliSchedule,
    forward_probability,
    posterior_probability,
    x0_from_flip_probability,
)
from .latent_unet import flip_probability

FlipModel = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class InferenceSettings:
    """L, P and how codes are drawn. Defaults are the author's command file (L=100, P=0.6); the
    official README and argparse defaults are L=200, P=0.5."""

    noise_level: int = 100
    threshold: float = 0.6
    sample_code: bool = True  # the official code samples the AE code at test time too
    seed: int = 0
    reference: str = "input"  # what the restoration is compared with: "input" or "reconstruction"

    def __post_init__(self) -> None:
        check(InferenceOptions, asdict(self), "Bernoulli diffusion settings")

    def record(self) -> dict:
        """The settings as fingerprints and saved-map records hold them: the official map's
        reference is left out, so those written before the option existed stay valid."""
        written = asdict(self)
        if written["reference"] == "input":
            del written["reference"]
        return written

    def check(self, schedule: BernoulliSchedule) -> None:
        if not 1 <= self.noise_level < schedule.steps:
            raise DisyreError(
                f"noise level L must be between 1 and {schedule.steps - 1}, got {self.noise_level}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise DisyreError(f"flip-probability threshold P must be in [0, 1], got {self.threshold}")


class SliceNoise:
    """Bernoulli draws from one CPU generator per slice, so results do not depend on batching."""

    def __init__(self, seed: int, n_slices: int) -> None:
        seeds = np.random.SeedSequence(seed).spawn(n_slices)
        self.generators = [torch.Generator().manual_seed(int(s.generate_state(1)[0])) for s in seeds]

    def bernoulli(self, p: torch.Tensor, start: int = 0) -> torch.Tensor:
        """One draw per element of ``p`` (B, ...), rows taken as slices ``start .. start + B``."""
        gens = self.generators[start : start + p.shape[0]]
        u = torch.stack([torch.rand(p.shape[1:], generator=g) for g in gens]).to(p.device)
        return (u < p).to(p.dtype)


@dataclass
class LatentState:
    """Where the reverse process of a batch of codes stands."""

    code: torch.Tensor  # the slices' own binary codes (B, bits, h, w)
    x: torch.Tensor  # current x_t
    mask: torch.Tensor  # bool union of the bits ever predicted to flip with probability > P


def start_state(
    schedule: BernoulliSchedule, code: torch.Tensor, noise_level: int, noise: SliceNoise, start: int = 0
) -> LatentState:
    """x_L ~ q(x_L | code) and an empty mask."""
    x = noise.bernoulli(forward_probability(schedule, code, noise_level), start)
    return LatentState(code=code, x=x, mask=torch.zeros_like(code, dtype=torch.bool))


def reverse_step(
    flip_model: FlipModel,
    schedule: BernoulliSchedule,
    state: LatentState,
    t: int,
    threshold: float,
    noise: SliceNoise,
    start: int = 0,
) -> torch.Tensor:
    """One network call at timestep ``t``; updates ``state`` and returns this step's x0 estimate
    (masked mix for t >= 1, the unmasked real-valued prediction at t = 0)."""
    flip = flip_model(state.x, t)
    x0 = x0_from_flip_probability(state.x, flip)
    if t == 0:
        return x0
    state.mask = state.mask | (flip > threshold)
    mixed = torch.where(state.mask, x0, state.code)
    state.x = noise.bernoulli(posterior_probability(schedule, mixed, state.x, t), start)
    return mixed


def restore_codes(
    flip_model: FlipModel,
    schedule: BernoulliSchedule,
    code: torch.Tensor,
    settings: InferenceSettings,
    noise: SliceNoise,
) -> Iterator[tuple[int, torch.Tensor, LatentState]]:
    """The whole reverse process for one batch of codes: yields (t, x0 estimate, state) per call."""
    settings.check(schedule)
    state = start_state(schedule, code, settings.noise_level, noise)
    for t in range(settings.noise_level - 1, -1, -1):
        yield t, reverse_step(flip_model, schedule, state, t, settings.threshold, noise), state


@dataclass
class BerDiffProgress:
    """After each batch of each reverse step; ``restoration`` is set when a kept step completes."""

    step: int  # 1-based network call
    n_steps: int
    timestep: int
    slices_done: int
    slices_total: int
    restoration: np.ndarray | None = None  # (N, C, H, W) decoded x0 estimate in [0, 1]

    @property
    def fraction(self) -> float:
        return ((self.step - 1) * self.slices_total + self.slices_done) / (self.n_steps * self.slices_total)


@dataclass
class BerDiffResult:
    """What a masked restoration of a slice stack (N, C, H, W) produced."""

    anomaly_map: np.ndarray  # (N, H, W) sum over channels of (restoration - reference)^2
    restoration: np.ndarray  # (N, C, H, W) decoded final x0, clamped to [0, 1]
    flip_mask: np.ndarray  # (N, H, W) fraction of latent bits in the final mask, per image pixel
    restorations: list[np.ndarray] = field(default_factory=list)  # kept steps, decoded
    timesteps: list[int] = field(default_factory=list)
    steps_run: int = 0  # reverse steps (network calls per slice)
    seconds: float = 0.0
    runtime: str = "torch"  # torch or onnxruntime (a network whose export failed warned and ran torch)


def with_channels(slices: np.ndarray, channels: int) -> np.ndarray:
    """(N, C, H, W) float32 from (N, H, W) (one-contrast models) or (N, C, H, W), C checked."""
    stack = np.asarray(slices, dtype=np.float32)
    if stack.ndim == 3 and channels == 1:
        stack = stack[:, None]
    if stack.ndim != 4 or stack.shape[1] != channels:
        expected = "(N, H, W) or (N, 1, H, W)" if channels == 1 else f"(N, {channels}, H, W)"
        raise InputError(
            f"this model takes {channels} contrast(s) per slice: expected slices {expected}, got "
            f"{stack.shape}; give the model as many co-registered contrasts as it was trained on."
        )
    return stack


def as_stack(slices: np.ndarray, ae: BinaryAutoencoder) -> np.ndarray:
    """:func:`with_channels` for the autoencoder, whose halvings must also divide the slice size."""
    cfg = ae.config
    stack = with_channels(slices, cfg.in_channels)
    if stack.shape[2] % cfg.downsampling or stack.shape[3] % cfg.downsampling:
        raise InputError(
            f"slice size {stack.shape[2]}x{stack.shape[3]} is not a multiple of {cfg.downsampling}, "
            "the autoencoder's downsampling; pad the slices."
        )
    return stack


def restore_slices(
    slices: np.ndarray,
    ae: BinaryAutoencoder,
    unet: torch.nn.Module,
    schedule: BernoulliSchedule,
    settings: InferenceSettings = InferenceSettings(),
    *,
    device: torch.device | None = None,
    autocast: torch.dtype | None = None,
    batch_size: int = 8,
    restoration_every: int = 10,
    runtime: str = "torch",
) -> Generator[BerDiffProgress, None, BerDiffResult]:
    """Masked restoration of a slice stack in [0, 1]; a generator of progress returning the result.

    All slices advance one reverse step at a time (in batches of ``batch_size``), so every
    ``restoration_every``-th step (counted from the first call; 0: none) and the last one can be
    decoded for the whole stack and shown. Stop iterating to cancel. ``runtime`` (torch, onnxruntime
    or auto) evaluates the three networks (``runtime.sessions``).
    """
    started = time.perf_counter()
    settings.check(schedule)
    if batch_size < 1:
        raise DisyreError(f"batch_size must be at least 1, got {batch_size}")
    device = device or torch.device("cpu")
    stack = as_stack(slices, ae)
    n, n_steps = len(stack), settings.noise_level
    ae, unet = ae.to(device).eval(), unet.to(device).eval()
    noise = SliceNoise(settings.seed, n)
    batches = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    plane = np.zeros((n, *stack.shape[2:]), np.float32)
    result = BerDiffResult(anomaly_map=plane, restoration=stack, flip_mask=plane.copy())
    result.runtime = choose_runtime(runtime, device, autocast)
    encode, flip_model, decode = _network_calls(ae, unet, result.runtime, stack)
    with inference_context(device, autocast):
        states = [_encode(encode, schedule, stack[a:b], settings, noise, a, device) for a, b in batches]
        for step, t in enumerate(range(n_steps - 1, -1, -1), start=1):
            estimates = []
            for (a, b), state in zip(batches, states, strict=True):
                estimates.append(reverse_step(flip_model, schedule, state, t, settings.threshold, noise, a))
                yield BerDiffProgress(step, n_steps, t, b, n)
            result.steps_run += 1
            if t == 0 or (restoration_every and step % restoration_every == 0):
                decoded = np.concatenate([_decode(decode, x0) for x0 in estimates])
                result.restorations.append(decoded)
                result.timesteps.append(t)
                yield BerDiffProgress(step, n_steps, t, n, n, restoration=decoded)
        result.restoration = result.restorations[-1]
        for state, (a, b) in zip(states, batches, strict=True):
            result.flip_mask[a:b] = _mask_in_image_space(state.mask, ae.config.downsampling)
        reference = stack
        if settings.reference == "reconstruction":
            reference = np.concatenate([_decode(decode, state.code) for state in states])
    result.anomaly_map = ((result.restoration - reference) ** 2).sum(axis=1)
    result.seconds = time.perf_counter() - started
    return result


def _unet_flip(unet: torch.nn.Module) -> FlipModel:
    return lambda x, t: flip_probability(unet, x, t)


def _network_calls(
    ae: BinaryAutoencoder, unet: torch.nn.Module, runtime: str, stack: np.ndarray
) -> tuple[Callable, FlipModel, Callable]:
    """The autoencoder's encoding and decoding and the latent UNet's flip probability: on torch, or
    (``runtime`` onnxruntime) each exported once and run by ONNX Runtime, timesteps as (B,) int64."""
    if runtime != "onnxruntime":
        return ae.bit_probabilities, _unet_flip(unet), ae.decode
    cfg = ae.config
    code = np.zeros((1, cfg.codebook_bits, *(s // cfg.downsampling for s in stack.shape[2:])), np.float32)
    encode = tensor_call(ae, ae.bit_probabilities, "berdiff-encoder", [stack[:1]], ["x"])
    decode = tensor_call(ae, ae.decode, "berdiff-decoder", [code], ["code"])
    flip = tensor_call(unet, _unet_flip(unet), "berdiff-latent-unet", [code, np.zeros(1, np.int64)], ["x", "t"])
    return encode, lambda x, t: flip(x, torch.full((x.shape[0],), t)), decode


def _encode(
    encode: Callable[[torch.Tensor], torch.Tensor],
    schedule: BernoulliSchedule,
    images: np.ndarray,
    settings: InferenceSettings,
    noise: SliceNoise,
    start: int,
    device: torch.device,
) -> LatentState:
    p = encode(torch.from_numpy(images).to(device)).float()
    code = noise.bernoulli(p, start) if settings.sample_code else (p > 0.5).float()
    return start_state(schedule, code, settings.noise_level, noise, start)


def _decode(decode: Callable[[torch.Tensor], torch.Tensor], code: torch.Tensor) -> np.ndarray:
    return decode(code).float().clamp(0, 1).cpu().numpy()


def _mask_in_image_space(mask: torch.Tensor, factor: int) -> np.ndarray:
    """Fraction of masked bits at each latent position, repeated over the pixels it covers."""
    fraction = mask.float().mean(dim=1).cpu().numpy()
    return fraction.repeat(factor, axis=1).repeat(factor, axis=2)
