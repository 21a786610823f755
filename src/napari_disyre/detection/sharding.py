"""Splitting a cohort across processes: job arrays (``--shard K/N``) and torchrun ranks.

Every process is given the same scan list (same arguments) and takes the scans at positions
``K, K + N, K + 2N, ...``: each scan goes to exactly one shard, with no communication, so a shard
that fails loses nothing of the others. Under torchrun (``RANK``/``WORLD_SIZE`` in the environment)
the ranks are shards, each on its own GPU (``LOCAL_RANK``); with ``--shard`` as well (a job array of
torchrun jobs), shard K of N is split again across the ranks. At the end the ranks meet once, over
gloo, only to agree on an exit status (the first rank to finish waits for the last): a rank whose
scans failed then does not make torchrun stop the others while they still work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from ..errors import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int = 0
    count: int = 1

    def take(self, items: Sequence[T]) -> list[T]:
        """This shard's items: every ``count``-th, starting at ``index`` (balanced to one item)."""
        return list(items[self.index :: self.count])

    def split(self, inner: Shard) -> Shard:
        """Shard ``inner`` of this shard's items, as one shard of the whole list."""
        return Shard(self.index + self.count * inner.index, self.count * inner.count)

    def describe(self) -> str:
        return f"shard {self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` with 0 <= K < N (SLURM: ``--array=0-(N-1)`` and ``--shard $SLURM_ARRAY_TASK_ID/N``)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"--shard takes K/N with integers, e.g. 0/4, got {text!r}.") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard {text}: K must be between 0 and N - 1 (0-based), and N at least 1.")
    return Shard(index, count)


def torchrun_shard(env: Mapping[str, str] = os.environ) -> Shard:
    """This process's rank as a shard (Shard(0, 1) outside torchrun)."""
    try:
        return Shard(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)))
    except ValueError:
        raise InputError("RANK and WORLD_SIZE must be integers (torchrun sets them).") from None


def resolve_shard(option: str | None, env: Mapping[str, str] = os.environ) -> Shard:
    """The shard this process runs: ``--shard`` (if given) split across the torchrun ranks (if any)."""
    outer = parse_shard(option) if option else Shard()
    return outer.split(torchrun_shard(env))


def rank_device(device: str, env: Mapping[str, str] = os.environ) -> str:
    """Under torchrun, ``auto``/``cuda`` become this rank's own GPU (``cuda:LOCAL_RANK``)."""
    import torch

    local = env.get("LOCAL_RANK")
    if local is None or device not in ("auto", "cuda") or not torch.cuda.is_available():
        return device
    return f"cuda:{int(local) % torch.cuda.device_count()}"


def agree_on_failures(failures: int, env: Mapping[str, str] = os.environ, hours: float = 72) -> int:
    """The number of failed scans over all torchrun ranks (this process's alone outside torchrun).

    Joining the process group is the rendezvous: each rank arrives when its scans are done.
    """
    if int(env.get("WORLD_SIZE", 1)) <= 1:
        return failures
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(hours=hours))
    try:
        total = torch.tensor([failures])
        dist.all_reduce(total)
        return int(total.item())
    finally:
        dist.destroy_process_group()
