"""The evaluation wing: anomaly maps scored against lesion labels, as the DISYRE paper reports them.

``cases`` pairs scans with labels; ``scoring`` scores the models and the baselines on each case;
``metrics`` holds the voxel- and slice-level metrics (numpy and scikit-learn only); ``report`` writes
the table, CSV, JSON and plots.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_EXPORTS = {
    "Case": "cases",
    "ScoredCase": "scoring",
    "MethodSummary": "scoring",
    "cases_by_name": "cases",
    "cases_in_folders": "cases",
    "cases_from_csv": "cases",
    "load_case": "scoring",
    "score_case": "scoring",
    "summarise": "scoring",
    "VoxelMetrics": "metrics",
    "average_precision": "metrics",
    "auroc": "metrics",
    "best_dice": "metrics",
    "voxel_metrics": "metrics",
    "pooled_voxel_metrics": "metrics",
    "slice_level_metrics": "metrics",
    "format_table": "report",
    "write_report": "report",
}

__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
