"""Evaluate the bundled T1 model on the real MS patients' T1 scans (Ljubljana MS database).

The bundled model was trained on healthy brains only (OpenNeuro ds002748, sub-52 ... sub-69), so
every MS patient is unseen. The intensity baselines are computed by the same evaluate command on the
same voxels (the scan's foreground; these scans are skull-stripped with a zero background). MS
lesions are dark on T1, so "inverted-intensity" (darkest is most anomalous) is the fair baseline.

The scans stay in ../shared (CC-BY, cite Lesjak et al., Neuroinformatics 2017); the report goes
under --out (not committed). Prints the README's Markdown table. Run from the repository root:

    python benchmarks/ms_t1.py --sweep 1,4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

MS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ms-open-ms-data" / "patients"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/report_ms_t1"), help="report folder (not committed)"
    )
    parser.add_argument("--sweep", default="1,4", help="restoration step counts S")
    parser.add_argument("--checkpoint", default=None, help="default: the bundled demo T1 model")
    args = parser.parse_args()
    if not MS.is_dir():
        print(f"skipped: {MS} is absent (the MS scans live in ../shared, never in the repository)")
        return 0
    if not (args.out / "metrics.json").exists():
        command = [
            sys.executable, "-m", "napari_disyre.cli", "evaluate", "--scans", str(MS), "--scan-name", "T1.nii.gz",
            "--label-name", "GOLD_STANDARD.nii.gz", "--sweep", args.sweep,
            "--baselines", "intensity,inverted-intensity", "--out", str(args.out),
            "--note", "bundled T1 model (trained on healthy ds002748 sub-52..69); test: MS patient07, patient19",
        ]  # fmt: skip
        if args.checkpoint:
            command += ["--checkpoint", args.checkpoint]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    report = json.loads((args.out / "metrics.json").read_text())
    print("| score | AP | best Dice | AUROC |")
    print("|---|---|---|---|")
    for name, pooled in report["pooled"].items():
        print(f"| {name} | {pooled['ap']:.3f} | {pooled['best_dice']:.3f} | {pooled['auroc']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
