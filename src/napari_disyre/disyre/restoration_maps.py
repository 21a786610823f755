"""The padded accumulators one restoration fills as its windows come back from the network: the
anomaly score, the final x, each step's restoration and, when asked, the map after each step.

Kept apart from :mod:`~napari_disyre.disyre.engine` (which decides what runs when) so that both stay short.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .windows import WindowLayout


class WindowJobs(Protocol):
    """What the accumulators need of the engine's window jobs: adding window values into a stack."""

    def accumulate(
        self, target: np.ndarray, values: np.ndarray, layout: WindowLayout, index: np.ndarray
    ) -> None: ...


class RestorationMaps:
    """The padded accumulators of one restoration: anomaly score, final x and per-step restorations
    (each allocated when its step starts and blended when it ends), all (N, C, Hp, Wp) for a stack of
    N slices of C channels (``stack``)."""

    def __init__(
        self,
        stack: tuple[int, int],
        layout: WindowLayout,
        n_steps: int,
        keep_restorations: bool,
        need_final: bool,
        keep_step_maps: bool = False,
        scores_accumulate: bool = True,
    ):
        self.layout = layout
        self.shape = (*stack, *layout.padded_size)  # (N, C, Hp, Wp)
        self.anomaly = np.zeros(self.shape, dtype=np.float32)
        self.final = np.zeros(self.shape, dtype=np.float32) if need_final else None
        self.keep = keep_restorations
        self.pending: dict[int, np.ndarray] = {}
        self.finished: set[int] = set()
        self.n_steps = n_steps
        self.restorations: list[np.ndarray] = []
        # the map after each step: per step, the padded weighted scores of that step alone
        # (``scores_accumulate``: summed over the steps when the step ends) or of all steps so far
        self.keep_step_maps = keep_step_maps
        self.scores_accumulate = scores_accumulate
        self.step_scores: dict[int, np.ndarray] = {}
        self.running_score: np.ndarray | None = None
        self.step_maps: list[np.ndarray] = []

    def add_restoration(self, step: int, jobs: WindowJobs, x0: np.ndarray, index: np.ndarray) -> None:
        if self.keep:
            target = self.pending.setdefault(step, np.zeros(self.shape, dtype=np.float32))
            jobs.accumulate(target, x0, self.layout, index)

    def add_step_score(self, step: int, jobs: WindowJobs, score: np.ndarray, index: np.ndarray) -> None:
        if self.keep_step_maps:
            target = self.step_scores.setdefault(step, np.zeros(self.shape, dtype=np.float32))
            jobs.accumulate(target, score, self.layout, index)

    def finish_step(self, step: int) -> np.ndarray | None:
        """Blend the restoration of a completed step (None when restorations are not kept) and, when
        kept, the map after it."""
        self.finished.add(step)
        if self.keep_step_maps:
            score = self.step_scores.pop(step, np.zeros(self.shape, np.float32))
            if self.scores_accumulate:
                self.running_score = score if self.running_score is None else self.running_score + score
                score = self.running_score
            self.step_maps.append(self.layout.blend(score))
        if not self.keep:
            return None
        self.restorations.append(self.layout.blend(self.pending.pop(step, np.zeros(self.shape, np.float32))))
        return self.restorations[-1]

    def unfinished_steps(self) -> list[int]:
        return [i for i in range(self.n_steps) if i not in self.finished]
