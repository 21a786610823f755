"""The evaluation report: a printed table, ``metrics.csv``, ``metrics.json`` and PNG plots.

Everything is written into a temporary folder that replaces the report folder at the end
(:func:`~napari_disyre.outputs.atomic_output`), so an interrupted evaluation never leaves half a report
and an existing report is kept unless ``overwrite``. matplotlib (Agg) is imported only here.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..outputs import atomic_output
from .metrics import VoxelMetrics, dice_curve
from .scoring import MethodSummary, ScoredCase

POOLED = "pooled"
CSV_COLUMNS = (
    "method",
    "volume",
    "ap",
    "auroc",
    "best_dice",
    "best_threshold",
    "n_voxels",
    "n_positive",
    "seconds",
)
GALLERY_SLICES = 3  # worst and best slices shown for the main method


def format_table(summaries: Sequence[MethodSummary]) -> str:
    """A Markdown table of the pooled figures, one row per score (undefined values read n/a)."""
    lines = [
        "| score | AP | best Dice (threshold) | AUROC | slice AUROC (top-100) | s / volume |",
        "|---|---|---|---|---|---|",
    ]
    for s in summaries:
        p = s.pooled
        lines.append(
            f"| {s.name} | {_fmt(p.ap)} | {_fmt(p.best_dice)} ({_fmt(p.best_threshold, 4)}) | {_fmt(p.auroc)} "
            f"| {_fmt(s.slice_level['top100']['auroc'])} | {_fmt(s.seconds_per_volume, 1)} |"
        )
    return "\n".join(lines)


def write_report(
    out: Path,
    summaries: Sequence[MethodSummary],
    cases: Sequence[ScoredCase],
    settings: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write the report folder ``out``: metrics.csv, metrics.json, pr_curve.png,
    dice_vs_threshold.png and gallery.png (the gallery of the first DISYRE score, if any)."""
    with atomic_output(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        _write_csv(tmp / "metrics.csv", summaries, cases)
        (tmp / "metrics.json").write_text(json.dumps(_as_json(summaries, cases, settings), indent=2) + "\n")
        _plot_curves(tmp, summaries, cases)
        main = next((s.name for s in summaries if s.name.startswith("DISYRE")), summaries[0].name)
        _plot_gallery(tmp / "gallery.png", cases, main, _summary(summaries, main).pooled.best_threshold)
    return out


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _summary(summaries: Sequence[MethodSummary], name: str) -> MethodSummary:
    return next(s for s in summaries if s.name == name)


def _row(method: str, volume: str, m: VoxelMetrics, seconds: float) -> dict[str, Any]:
    return {
        "method": method,
        "volume": volume,
        "ap": m.ap,
        "auroc": m.auroc,
        "best_dice": m.best_dice,
        "best_threshold": m.best_threshold,
        "n_voxels": m.n_voxels,
        "n_positive": m.n_positive,
        "seconds": seconds,
    }


def _write_csv(path: Path, summaries: Sequence[MethodSummary], cases: Sequence[ScoredCase]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        for s in summaries:
            for c in cases:
                writer.writerow(_row(s.name, c.case.id, s.per_volume[c.case.id], c.seconds[s.name]))
            writer.writerow(_row(s.name, POOLED, s.pooled, s.seconds_per_volume))


def _clean(value: Any) -> Any:
    """JSON has no NaN: undefined metrics become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _as_json(
    summaries: Sequence[MethodSummary], cases: Sequence[ScoredCase], settings: dict[str, Any]
) -> dict:
    return _clean(
        {
            "settings": settings,
            "labels": "binarised: label > 0 is anomalous",
            "volumes": [
                {
                    "id": c.case.id,
                    "scan": str(c.case.scan),
                    "label": str(c.case.label),
                    "brain_mask": str(c.case.brain_mask) if c.case.brain_mask else None,
                    "region_voxels": int(c.region.sum()),
                    "lesion_voxels": int((c.label & c.region).sum()),
                }
                for c in cases
            ],
            "pooled": {s.name: _row(s.name, POOLED, s.pooled, s.seconds_per_volume) for s in summaries},
            "per_volume": {
                s.name: {v: _row(s.name, v, m, _seconds(cases, v, s.name)) for v, m in s.per_volume.items()}
                for s in summaries
            },
            "slice_level": {s.name: s.slice_level for s in summaries},
            "at_threshold": {s.name: s.at_threshold for s in summaries if s.at_threshold},
        }
    )


def _seconds(cases: Sequence[ScoredCase], volume: str, name: str) -> float:
    return next(c.seconds[name] for c in cases if c.case.id == volume)


def _pooled(cases: Sequence[ScoredCase], name: str) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([c.scores[name][c.region] for c in cases]).astype(np.float64)
    labels = np.concatenate([c.label[c.region] for c in cases])
    return scores, labels


def _plot_curves(folder: Path, summaries: Sequence[MethodSummary], cases: Sequence[ScoredCase]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    pr, pr_ax = plt.subplots(figsize=(5, 4.5))
    dc, dc_ax = plt.subplots(figsize=(5, 4.5))
    for s in summaries:
        scores, labels = _pooled(cases, s.name)
        if labels.any():
            precision, recall, _ = precision_recall_curve(labels, scores)
            pr_ax.plot(recall, precision, label=f"{s.name} (AP {_fmt(s.pooled.ap)})")
        thresholds, dice = dice_curve(scores, labels)
        if thresholds.size:
            span = thresholds[-1] - thresholds[0] or 1.0
            dc_ax.plot(
                (thresholds - thresholds[0]) / span, dice, label=f"{s.name} (best {_fmt(s.pooled.best_dice)})"
            )
    pr_ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="Voxel precision-recall (pooled)",
    )
    dc_ax.set(
        xlabel="threshold (fraction of the score range)",
        ylabel="Dice",
        ylim=(0, 1.02),
        title="Dice vs threshold",
    )
    for fig, ax, name in ((pr, pr_ax, "pr_curve.png"), (dc, dc_ax, "dice_vs_threshold.png")):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)


def _slice_dice(c: ScoredCase, name: str, threshold: float, axis: int = 2) -> list[tuple[float, int]]:
    """(Dice, slice index) of every slice holding lesion voxels, at ``threshold``."""
    predicted = (c.scores[name] > threshold) & c.region
    truth = c.label & c.region
    out = []
    for k in np.flatnonzero(truth.any(axis=(0, 1))):
        p, t = predicted[..., k], truth[..., k]
        out.append((2.0 * np.count_nonzero(p & t) / (np.count_nonzero(p) + np.count_nonzero(t)), int(k)))
    return out


def _plot_gallery(path: Path, cases: Sequence[ScoredCase], name: str, threshold: float) -> None:
    """The worst and best lesion slices of ``name`` (by slice Dice at the pooled best threshold):
    scan, anomaly map, ground truth and the thresholded mask, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # by Dice, then case and slice, so that ties never compare the cases themselves
    ranked = sorted(
        ((d, k, c) for c in cases for d, k in _slice_dice(c, name, threshold)),
        key=lambda item: (item[0], item[2].case.id, item[1]),
    )
    picks = ranked[:GALLERY_SLICES] + ranked[-GALLERY_SLICES:] if len(ranked) > 2 * GALLERY_SLICES else ranked
    rows = max(len(picks), 1)
    fig, axes = plt.subplots(rows, 4, figsize=(10, 2.6 * rows), squeeze=False)
    for row, (dice, k, c) in enumerate(picks):
        scan, score = c.scan.data[..., k].T, c.scores[name][..., k].T
        truth, mask = c.label[..., k].T, ((c.scores[name][..., k] > threshold) & c.region[..., k]).T
        panels = (
            (scan, "gray", "scan"),
            (score, "inferno", name),
            (truth, "gray", "ground truth"),
            (mask, "gray", f"mask > {threshold:.3g}"),
        )
        for ax, (image, cmap, title) in zip(axes[row], panels, strict=True):
            ax.imshow(image, cmap=cmap, origin="lower", interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        axes[row][0].set_title(f"{c.case.id} slice {k}: Dice {dice:.2f}", fontsize=8)
    if not picks:
        axes[0][0].text(0.5, 0.5, "no lesion voxels to show", ha="center")
        for ax in axes[0]:
            ax.axis("off")
    fig.suptitle(f"{name}: worst (top) and best (bottom) lesion slices", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
