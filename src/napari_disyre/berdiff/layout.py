"""The Bernoulli diffusion checkpoint folder's file names and metadata, read without torch.

``load_checkpoint`` and the widget call :func:`is_berdiff_folder` and :func:`read_berdiff_metadata`
to tell the two methods apart and to show this method's controls (L, P) as soon as a folder is
chosen, before torch is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint_files import check_format, read_json_object
from ..errors import CheckpointError
from ..validation import BerDiffJson, check

METHOD = "berdiff"
FORMAT_NAME = "napari-disyre-berdiff"
FORMAT_VERSION = 1
METADATA_FILE = "berdiff.json"
AE_WEIGHTS = "autoencoder.safetensors"
UNET_WEIGHTS = "latent_unet.safetensors"


def is_berdiff_folder(path: str | Path) -> bool:
    return (Path(path) / METADATA_FILE).is_file()


def read_berdiff_metadata(folder: str | Path) -> dict[str, Any]:
    """``berdiff.json`` of ``folder``, checked to name this format and method and then against its
    schema (:class:`~napari_disyre.validation.BerDiffJson`: every size, type and range) before any
    network is built from it; CheckpointError naming the field if not."""
    path = Path(folder) / METADATA_FILE
    meta = read_json_object(path, "Bernoulli diffusion metadata")
    check_format(meta, FORMAT_NAME, FORMAT_VERSION, str(path), "Bernoulli diffusion metadata")
    if meta.get("method") != METHOD:
        raise CheckpointError(
            f"{path}: says it holds method {meta.get('method')!r}, not {METHOD!r}; the folder is mislabelled."
        )
    check(BerDiffJson, meta, f"{path}: malformed Bernoulli diffusion metadata", error=CheckpointError)
    return meta
