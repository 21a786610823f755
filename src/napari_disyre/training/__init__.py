"""The training wing: everything that makes a checkpoint from healthy scans.

``loop`` runs the training with its ``config``, saving its resumable ``state``, writing the
checkpoint and its healthy-score quantiles through ``export``, on one process or several
(``distributed``, under torchrun). The slice dataset (``dataset``), the synthetic corruption the network
learns to undo (``corruption``), the augmentations (``augment``), the network presets (``presets``)
and the one-contrast check (``contrasts``) feed it. Detection never imports this wing.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_EXPORTS = {
    "train": "loop",
    "TrainingReport": "loop",
    "check_training_inputs": "dataset",
    "TrainingConfig": "config",
    "healthy_score_quantiles": "export",
    "export_checkpoint": "export",
    "auto_workers": "distributed",
    "TrainingScan": "dataset",
    "SliceBank": "dataset",
    "CorruptedSlices": "dataset",
    "training_batches": "dataset",
    "Corruption": "corruption",
    "dag_corrupt": "corruption",
    "AugmentationProbabilities": "augment",
    "augment_slice": "augment",
    "Preset": "presets",
    "PRESETS": "presets",
    "get_preset": "presets",
    "contrast_from_name": "contrasts",
    "check_same_contrast": "contrasts",
}

__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
