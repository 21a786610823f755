"""Training data: the usable 2D slices of healthy scans, and an endless stream of corrupted examples.

Scans go through the same :func:`~napari_disyre.scans.preprocessing.prepare_scan` as at detection time, so a
model never sees data prepared differently from what it will be given. Slices with any non-zero voxel
along the checkpoint's slicing axis are kept (as officially); with an exclusion label (a lesion
mask), every slice touching a labelled voxel is dropped, which is how tumour-free slices of patients
are used for training.

Several contrasts: a training scan is one patient's co-registered contrasts (``TrainingScan.contrasts``),
scaled each on its own as at detection time, and a slice is (C, H, W); see ``augment`` and
``corruption`` for how one example treats its channels.

Each batch has its own seeded generator (see :class:`CorruptedSlices`), so batches can be made in
worker processes and a resumed run draws exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..disyre.schedule import Schedule
from ..errors import InputError
from ..scans.contrasts import MultiContrastScan, load_contrasts
from ..scans.nifti import Volume, load_matching, load_scan
from ..scans.preprocessing import Preprocessing, prepare_contrasts, prepare_scan
from .augment import DEFAULT_PROBABILITIES, AugmentationProbabilities, augment_slice
from .corruption import dag_corrupt


@dataclass(frozen=True)
class TrainingScan:
    """A healthy scan for training, with an optional brain mask and an optional exclusion label.

    Several contrasts: ``contrasts`` holds ``(name, path)`` per channel and ``path`` is the first."""

    path: Path
    brain_mask: Path | None = None
    exclude_label: Path | None = None
    contrasts: tuple[tuple[str, Path], ...] = ()

    @property
    def name(self) -> str:
        """The file's name; for several contrasts, the patient folder's."""
        return self.path.parent.name if self.contrasts else self.path.name

    def load(self) -> Volume | MultiContrastScan:
        """The scan (one Volume), or its contrasts (grids checked)."""
        return load_contrasts(dict(self.contrasts)) if self.contrasts else load_scan(self.path)

    def reference(self) -> tuple[Volume | MultiContrastScan, Volume]:
        """The loaded input and the Volume whose grid masks and labels must lie on."""
        loaded = self.load()
        return loaded, loaded.reference if isinstance(loaded, MultiContrastScan) else loaded


@dataclass
class SliceBank:
    """Every usable slice of a set of scans, on the model grid, as float32 in [0, 1]."""

    slices: list[np.ndarray]
    volume_of: np.ndarray  # index of the scan each slice comes from
    scan_names: list[str]

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def n_volumes(self) -> int:
        return len(self.scan_names)

    @classmethod
    def from_scans(
        cls,
        scans: Sequence[TrainingScan],
        spec: Preprocessing,
        on_scan: Callable[[int, TrainingScan], None] | None = None,
    ) -> SliceBank:
        slices: list[np.ndarray] = []
        volume_of: list[int] = []
        for index, scan in enumerate(scans):
            if on_scan is not None:
                on_scan(index, scan)
            kept = scan_slices(scan, spec)
            if not kept:
                raise InputError(
                    f"{scan.path}: no usable slice (all slices are empty"
                    + (" or touch the exclusion label)" if scan.exclude_label else ")")
                    + "; remove it from the training set."
                )
            slices.extend(kept)
            volume_of.extend([index] * len(kept))
        return cls(slices=slices, volume_of=np.asarray(volume_of), scan_names=[s.name for s in scans])


#: Why a training scan far coarser than the model's grid is warned about (not refused).
COARSE_TRAINING = (
    "the model would learn blurred, interpolated slices as healthy anatomy. Train on finer scans, or on "
    "a coarser grid (--spacing)."
)


def scan_slices(scan: TrainingScan, spec: Preprocessing) -> list[np.ndarray]:
    """The non-empty slices of one scan along ``spec.slice_axis`` ((H, W) each, or (C, H, W) for
    several contrasts), minus those touching its label."""
    from ..detection.pipeline import warn_if_coarse

    loaded, volume = scan.reference()
    warn_if_coarse(volume, spec.spacing, COARSE_TRAINING)
    mask = load_matching(scan.brain_mask, volume, what="brain mask") if scan.brain_mask else None
    if isinstance(loaded, MultiContrastScan):
        prepared = prepare_contrasts(loaded.channels, volume.affine, spec, mask)
        image = np.moveaxis(prepared.image, spec.slice_axis + 1, 0)
    else:
        prepared = prepare_scan(volume.data, volume.affine, spec, mask)
        image = np.moveaxis(prepared.image, spec.slice_axis, 0)
    keep = image.reshape(len(image), -1).any(axis=1)
    if scan.exclude_label is not None:
        label = load_matching(scan.exclude_label, volume, what="exclusion label") > 0
        on_grid = prepared.grid.to_model(label.astype(np.float32), order=1) > 0
        touched = np.moveaxis(on_grid, spec.slice_axis, 0).reshape(len(image), -1).any(axis=1)
        keep &= ~touched
    return [np.ascontiguousarray(s) for s in image[keep]]


class CorruptedSlices:
    """Training examples ``(x_t, x_0, t)``: an augmented healthy crop, its DAG corruption, and the
    timestep of the corruption level.

    Batch ``k`` comes from its own generator, seeded by ``(*seed, k)``: any process can make any
    batch, so worker processes can make them in parallel (a GPU outruns one CPU core), and a resumed
    run draws exactly the batches an uninterrupted one would have, with no generator state to save.
    """

    def __init__(
        self,
        bank: SliceBank,
        schedule: Schedule,
        seed: Sequence[int],
        crop: int = 96,
        probabilities: AugmentationProbabilities = DEFAULT_PROBABILITIES,
    ):
        if len(bank) == 0:
            raise InputError("no training slices")
        self.bank = bank
        self.schedule = schedule
        self.seed = tuple(int(s) for s in seed)
        self.crop = (crop, crop)
        self.probabilities = probabilities

    def batch(self, index: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch ``index`` of ``size`` examples: corrupted (B, C, h, w), clean (B, C, h, w), timesteps (B,)."""
        rng = np.random.default_rng([*self.seed, index])
        examples = [self._example(rng) for _ in range(size)]
        corrupted = _channels_first(np.stack([e[0] for e in examples]))
        clean = _channels_first(np.stack([e[1] for e in examples]))
        timesteps = self.schedule.level_to_timestep(np.array([e[2] for e in examples], dtype=np.float32))
        return corrupted, clean, timesteps.astype(np.int64)

    def _example(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        index = int(rng.integers(len(self.bank)))
        clean = augment_slice(rng, self.bank.slices[index], self.crop, self.probabilities)
        foreign = self.bank.slices[self._foreign_index(rng, index)]
        corruption = dag_corrupt(rng, clean, foreign)
        return corruption.image.astype(np.float32), clean.astype(np.float32), corruption.level

    def _foreign_index(self, rng: np.random.Generator, index: int) -> int:
        """A slice of another scan when there is one (a foreign patch should be foreign)."""
        others = np.flatnonzero(self.bank.volume_of != self.bank.volume_of[index])
        if len(others) == 0:
            return int(rng.integers(len(self.bank)))
        return int(others[rng.integers(len(others))])


def _channels_first(batch: np.ndarray) -> np.ndarray:
    """(B, h, w) slices of one contrast as (B, 1, h, w); (B, C, h, w) as they are."""
    return batch[:, None] if batch.ndim == 3 else batch


def check_training_inputs(
    scans: Sequence[TrainingScan], validation: Sequence[TrainingScan], *, allow_mixed_contrasts: bool = False
) -> None:
    """Refuse unusable training data before any work: no scans, unreadable or empty files, 4D
    files, masks on other grids, contrasts of one patient on different grids, scans of different
    contrasts (for several contrasts: within each channel)."""
    from .contrasts import check_same_contrast

    if not scans:
        raise InputError(
            "no training scans were given (the folder is empty, or nothing matched the pattern)."
        )
    for scan in [*scans, *validation]:
        _, volume = scan.reference()
        for extra, what in ((scan.brain_mask, "brain mask"), (scan.exclude_label, "exclusion label")):
            if extra is not None:
                load_matching(extra, volume, what=what)
    if not allow_mixed_contrasts:
        everything = [*scans, *validation]
        for channel in range(max(1, len(everything[0].contrasts))):
            check_same_contrast([s.contrasts[channel][1] if s.contrasts else s.path for s in everything])


class BatchRange:
    """Batches ``first .. last - 1`` of a stream, indexable: what a ``torch.utils.data.DataLoader``
    hands to its worker processes (module level, so that it pickles where workers are spawned)."""

    def __init__(self, stream: CorruptedSlices, first: int, last: int, size: int):
        self.stream, self.first, self.last, self.size = stream, first, last, size

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def __getitem__(self, position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.stream.batch(self.first + position, self.size)


def training_batches(
    stream: CorruptedSlices, first: int, last: int, size: int, workers: int, pin_memory: bool = False
) -> Iterator[tuple]:
    """Batches ``first .. last - 1`` in order; made in ``workers`` processes ahead of use (0: here,
    one at a time). Worker batches arrive as torch tensors, the others as numpy arrays."""
    batches = BatchRange(stream, first, last, size)
    if workers == 0:
        return (batches[i] for i in range(len(batches)))
    from torch.utils.data import DataLoader

    loader = DataLoader(
        batches, batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin_memory, prefetch_factor=4
    )
    return iter(loader)
