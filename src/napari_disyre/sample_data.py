"""The demo data that ships inside the package: a T1 brain with a lesion, its ground truth, and a
small trained checkpoint. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"


def demo_checkpoint_path() -> Path:
    """The bundled T1 checkpoint (official layout plus napari-disyre metadata)."""
    return DATA_DIR / "demo_t1_checkpoint"


def demo_scan_path() -> Path:
    """The MNI152 2009 T1 template with two synthetic lesions (see scripts/make_demo_data.py)."""
    return DATA_DIR / "demo_t1_scan.nii.gz"


def demo_lesion_path() -> Path:
    """Ground truth of the demo lesions (uint8, 1 = lesion) on the demo scan's grid."""
    return DATA_DIR / "demo_t1_lesion.nii.gz"
