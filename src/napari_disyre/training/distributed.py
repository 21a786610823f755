"""Data-parallel training under ``torchrun``, and how many processes make batches.

``torchrun`` sets WORLD_SIZE, RANK and LOCAL_RANK; each rank then draws its own examples (seeded by
its rank) and DistributedDataParallel averages the gradients, so the same command trains on one
CPU or on several GPUs with no code change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..runtime.devices import resolve_device

if TYPE_CHECKING:
    import torch


@dataclass
class Distributed:
    """torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK), or a single process."""

    world: int
    rank: int
    device: Any

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_name: str) -> Distributed:
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

    def wrap(self, model, *, find_unused_parameters: bool = False):
        """``model`` in DistributedDataParallel (itself in a single process). ``find_unused_parameters``
        for models whose loss leaves some weights out (the binarising autoencoder's)."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )

    def close(self) -> None:
        if self.world > 1:
            import torch

            torch.distributed.destroy_process_group()


def auto_workers(device: torch.device, world: int) -> int:
    """Batch-making processes when none are asked for. On the CPU, 0: the cores are busy with the
    network. On an accelerator, this process's share of the cores minus one for the training loop,
    at most 8: one core made about 800 corrupted 96 x 96 crops a second here
    (``benchmarks/bench_training_data.py``), and without workers an H200 trained at 3-5 steps/s of 64."""
    if device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores // world - 1))
