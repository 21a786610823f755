"""The demo data that ships inside the package: a T1 brain with a lesion, its ground truth, and two
small checkpoints trained on the same 21 healthy CC0 brains (DISYRE and masked Bernoulli diffusion).
Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
BUNDLED_CHECKPOINTS = {"demo": "demo_t1_checkpoint", "demo-berdiff": "demo_t1_berdiff"}
"""Names that ``--checkpoint`` and the widget accept for the bundled models (a real path wins)."""


def demo_checkpoint_path(method: str = "disyre") -> Path:
    """The bundled T1 checkpoint of ``method``: DISYRE (official layout plus napari-disyre metadata)
    or masked Bernoulli diffusion (``berdiff``)."""
    return DATA_DIR / BUNDLED_CHECKPOINTS["demo-berdiff" if method == "berdiff" else "demo"]


def bundled_checkpoint(path: str | Path) -> Path:
    """``path``, or the bundled checkpoint it names when no such file or folder exists."""
    path = Path(path).expanduser()
    if not path.exists() and str(path) in BUNDLED_CHECKPOINTS:
        return DATA_DIR / BUNDLED_CHECKPOINTS[str(path)]
    return path


def is_bundled(path: str | Path) -> bool:
    """Whether ``path`` lies inside the package's own data (the demo): no place for a user's results."""
    return Path(path).resolve().is_relative_to(DATA_DIR.resolve())


def demo_scan_path() -> Path:
    """The MNI152 2009 T1 template with two synthetic lesions (see scripts/make_demo_data.py)."""
    return DATA_DIR / "demo_t1_scan.nii.gz"


def demo_lesion_path() -> Path:
    """Ground truth of the demo lesions (uint8, 1 = lesion) on the demo scan's grid."""
    return DATA_DIR / "demo_t1_lesion.nii.gz"
