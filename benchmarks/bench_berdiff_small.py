"""How long the ``small`` Bernoulli diffusion preset takes on this machine, to size its step counts.

Measures seconds per optimiser step of each training stage at the preset's batch sizes, and seconds
per slice of masked inference at L = 20 (the cost is linear in L), on random 128 x 128 slices with
freshly initialised networks: speed does not depend on what the weights learned. Prints one line.
Run from the repository root:

    PYTHONPATH=src python benchmarks/bench_berdiff_small.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_disyre.berdiff.bernoulli import BernoulliSchedule
from napari_disyre.berdiff.inference import InferenceSettings, restore_slices
from napari_disyre.berdiff.presets import get_berdiff_preset
from napari_disyre.berdiff.training import stage_settings, train_autoencoder, train_latent_diffusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps timed per stage")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = get_berdiff_preset("small")
    size = preset.autoencoder.image_size
    rng = np.random.default_rng(0)

    def batches(batch: int):
        return lambda step: rng.random((batch, 1, size, size), dtype=np.float32)

    started = time.perf_counter()
    ae = train_autoencoder(
        batches(preset.training.ae_batch_size),
        preset.autoencoder,
        stage_settings(preset, "autoencoder", steps=args.steps),
    )
    ae_step = (time.perf_counter() - started) / args.steps
    started = time.perf_counter()
    unet = train_latent_diffusion(
        batches(preset.training.diffusion_batch_size),
        ae.ema,
        preset.unet,
        BernoulliSchedule(),
        stage_settings(preset, "diffusion", steps=args.steps),
    )
    diffusion_step = (time.perf_counter() - started) / args.steps
    slices = rng.random((4, size, size), dtype=np.float32)
    run = restore_slices(
        slices, ae.ema, unet.ema, BernoulliSchedule(), InferenceSettings(noise_level=20), restoration_every=0
    )
    started = time.perf_counter()
    for _ in run:
        pass
    per_slice = (time.perf_counter() - started) / len(slices)
    hours = (ae_step * preset.training.ae_steps + diffusion_step * preset.training.diffusion_steps) / 3600
    print(
        f"{args.threads} thread(s): autoencoder {ae_step:.2f} s/step (batch {preset.training.ae_batch_size}), "
        f"diffusion {diffusion_step:.2f} s/step (batch {preset.training.diffusion_batch_size}), "
        f"preset training {hours:.2f} h; inference {per_slice:.2f} s/slice at L=20"
    )


if __name__ == "__main__":
    main()
