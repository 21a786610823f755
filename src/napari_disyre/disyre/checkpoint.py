"""Loading and saving restoration checkpoints, safely and in the official layout.

Three forms are read by the one function :func:`load_disyre_checkpoint`:

* the official layout, a diffusers pipeline folder written by ``DISYREPipeline.save_pretrained``:
  ``model_index.json``, ``unet/config.json`` + ``unet/diffusion_pytorch_model.safetensors`` (older
  diffusers: ``.bin``), ``scheduler/scheduler_config.json``;
* the same folder with this project's ``disyre.json`` beside them (preprocessing, contrast, grid,
  provenance, healthy score distribution): what ``napari-disyre train`` writes, still loadable by the
  official code;
* a single ``.safetensors`` file whose metadata holds the three JSON documents.

Nothing is unpickled: weights come from safetensors, or from ``.bin`` with ``weights_only=True``.
The official repository's Python classes are never needed: the scheduler JSON is read here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..checkpoint_files import (
    channel_names,
    check_format,
    checkpoint_path,
    content_fingerprint,
    parse_json_object,
    read_json_object,
)
from ..errors import CheckpointError
from ..outputs import atomic_output, write_json
from ..scans.preprocessing import OFFICIAL_PREPROCESSING, Preprocessing
from ..validation import check
from .checkpoint_checks import DisyreJson, check_info_bounds
from .methods import DEFAULT_METHOD, METHODS, Method
from .schedule import Schedule
from .unet import build_unet, load_weights, unet_config_dict
from .windows import sample_size_pair

if TYPE_CHECKING:
    import torch
    from diffusers import UNet2DModel


Layout = Literal["official", "napari-disyre", "single-file"]

METADATA_FILE = "disyre.json"
WEIGHTS_SAFETENSORS = "diffusion_pytorch_model.safetensors"
WEIGHTS_BIN = "diffusion_pytorch_model.bin"
FORMAT_NAME = "napari-disyre"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself beyond its weights (``disyre.json``).

    Official checkpoints carry none of this; they get the official preprocessing and defaults.
    ``healthy_score_quantiles`` maps quantile levels ("0.99", "0.999") to anomaly scores measured on
    healthy validation voxels, from which the widget suggests a threshold. ``contrasts`` names the
    input channels in order (``("flair", "t2")``); empty for one channel, named by ``contrast``.
    """

    contrast: str | None = None
    contrasts: tuple[str, ...] = ()
    preprocessing: Preprocessing = OFFICIAL_PREPROCESSING
    steps: int = 4
    method: Method = DEFAULT_METHOD
    weight_foreground: bool = True
    healthy_score_quantiles: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    postprocessing: dict[str, int] = field(default_factory=dict)  # default map post-processing

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        if not self.contrasts:  # one-channel metadata (and fingerprint) as before contrasts existed
            del d["contrasts"]
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> CheckpointInfo:
        """``disyre.json``'s content checked against its schema (:class:`DisyreJson`: types, ranges, no
        unknown key) before anything is built from it."""
        check_format(d, FORMAT_NAME, FORMAT_VERSION, source, "DISYRE metadata")
        meta = check(DisyreJson, d, f"{source}: malformed napari-disyre metadata", error=CheckpointError)
        if meta.method not in METHODS:
            raise CheckpointError(
                f"{source}: unknown method {meta.method!r}; choose one of {', '.join(METHODS)}."
            )
        return cls(
            contrast=meta.contrast,
            contrasts=tuple(meta.contrasts),
            preprocessing=Preprocessing.from_dict(meta.preprocessing.model_dump(exclude_unset=True)),
            steps=meta.steps,
            method=meta.method,  # type: ignore[arg-type]
            weight_foreground=meta.weight_foreground,
            healthy_score_quantiles=dict(meta.healthy_score_quantiles),
            training=dict(meta.training),
            description=meta.description,
            postprocessing=meta.postprocessing.model_dump(exclude_unset=True),
        )


@dataclass
class Checkpoint:
    """A loaded restoration network with its schedule and metadata (weights in float32 on the CPU)."""

    unet: UNet2DModel
    schedule: Schedule
    info: CheckpointInfo
    source: Path | None = None
    layout: Layout = "official"
    # the detection seam's name for this method (napari_disyre.detection.detectors)
    kind: ClassVar[str] = "disyre"

    def __post_init__(self) -> None:
        self.contrasts  # noqa: B018 (refuses metadata naming more or fewer contrasts than channels)

    @property
    def contrasts(self) -> tuple[str, ...]:
        """The input channels by name, in order (see :func:`~napari_disyre.checkpoint_files.channel_names`)."""
        return channel_names(self.info.contrasts, self.unet.config.in_channels, self.name, self.info.contrast)

    @property
    def window(self) -> tuple[int, int]:
        """Sliding-window size: the UNet's ``sample_size`` (an int or a pair in its config)."""
        return sample_size_pair(self.unet.config.sample_size)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    @property
    def name(self) -> str:
        return self.source.name if self.source is not None else "in-memory model"

    def summary(self) -> str:
        """One line for the widget and the CLI: contrast, size, window, grid."""
        pre = self.info.preprocessing
        grid = (f"{'x'.join(f'{s:g}' for s in pre.spacing)} mm" if pre.spacing else "scan's own grid") + (
            f", {pre.orientation}" if pre.orientation else ""
        )
        inputs = " + ".join(self.info.contrasts) or self.info.contrast or "contrast not stated"
        return (
            f"{self.name}: {inputs}, "
            f"{self.n_parameters / 1e6:.1f} M parameters, {self.window[0]}x{self.window[1]} windows, {grid} "
            f"({self.layout} layout)"
        )

    def with_info(self, **changes: Any) -> Checkpoint:
        return replace(self, info=replace(self.info, **changes))

    def fingerprint(self) -> str:
        """The model by its content: weights, UNet config, schedule and the metadata that changes
        a raw map (saved maps are raw: the recorded post-processing and free text are left out)."""
        info = {k: v for k, v in self.info.to_dict().items() if k not in ("postprocessing", "description")}
        parts = [unet_config_dict(self.unet) | {"_diffusers_version": ""}, self.schedule.to_config(), info]
        return content_fingerprint(parts, {"": self.unet})  # key names as they have always been hashed


# -- loading -------------------------------------------------------------------------------------


def load_disyre_checkpoint(path: str | Path) -> Checkpoint:
    """Load a DISYRE checkpoint (official folder, napari-disyre folder or single file); every problem
    is a :class:`CheckpointError` naming the file. ``detection.load_checkpoint`` tells the methods
    apart and calls this for DISYRE's."""
    path = checkpoint_path(path)
    return _load_single_file(path) if path.is_file() else _load_folder(path)


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """What a checkpoint says about itself (defaults, contrast, grid) without loading its network.

    Cheap and torch-free: the widget calls it as soon as a checkpoint is chosen, so that its step
    count and method controls show the checkpoint's own defaults before anything runs.
    """
    path = checkpoint_path(path)
    if path.is_file():
        metadata = _single_file_metadata(path)
        return _info_from_metadata(metadata, path)
    _unet_dir(path)
    return _folder_info(path)


def _unet_dir(folder: Path) -> Path:
    unet_dir = folder / "unet"
    if not unet_dir.is_dir():
        from ..training.state import STATE_DIR, STATE_FILE

        if (folder / STATE_DIR / STATE_FILE).exists():
            raise CheckpointError(
                f"{folder}: an interrupted training run that has not exported a model yet: continue it "
                f"with napari-disyre train ... --out {folder} --resume.",
                title="Training not finished yet",
            )
        hint = (
            " This looks like the unet/ subfolder itself: give its parent folder."
            if (folder / "config.json").exists()
            else " Point to the folder that holds model_index.json, unet/ and scheduler/ (DISYRE) or "
            "berdiff.json (Bernoulli diffusion)."
        )
        raise CheckpointError(
            f"{folder}: no unet/ folder and no berdiff.json: not a checkpoint of either method.{hint}",
            title="Not a checkpoint",
        )
    return unet_dir


def _folder_info(folder: Path) -> CheckpointInfo:
    info_path = folder / METADATA_FILE
    if not info_path.exists():
        return CheckpointInfo()
    return check_info_bounds(
        CheckpointInfo.from_dict(_read_json(info_path, "napari-disyre metadata"), str(info_path)),
        str(info_path),
    )


def _load_folder(folder: Path) -> Checkpoint:
    unet_dir = _unet_dir(folder)
    config = _read_json(unet_dir / "config.json", "UNet config")
    schedule = Schedule.from_json(
        _require(folder / "scheduler" / "scheduler_config.json", "scheduler config")
    )
    info = _folder_info(folder)
    unet = build_unet(config, str(unet_dir / "config.json"))
    load_weights(unet, _read_weights(unet_dir), str(unet_dir))
    layout: Layout = "napari-disyre" if (folder / METADATA_FILE).exists() else "official"
    return Checkpoint(unet=unet, schedule=schedule, info=info, source=folder, layout=layout)


def _single_file_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata (read with numpy: no torch), refusing weight-only files."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}).") from exc
    missing = [
        k for k in ("napari_disyre.unet_config", "napari_disyre.scheduler_config") if k not in metadata
    ]
    if missing:
        raise CheckpointError(
            f"{path}: this .safetensors file holds weights only (no {', '.join(missing)} in its metadata), "
            "so the network cannot be rebuilt. Use a checkpoint folder, or a file saved by napari-disyre."
        )
    return metadata


def _info_from_metadata(metadata: dict[str, str], path: Path) -> CheckpointInfo:
    if "napari_disyre.info" not in metadata:
        return CheckpointInfo()
    return check_info_bounds(
        CheckpointInfo.from_dict(
            parse_json_object(metadata["napari_disyre.info"], str(path), "napari-disyre metadata"), str(path)
        ),
        str(path),
    )


def _load_single_file(path: Path) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    metadata = _single_file_metadata(path)
    config = parse_json_object(metadata["napari_disyre.unet_config"], str(path), "UNet config")
    schedule = Schedule.from_config(
        parse_json_object(metadata["napari_disyre.scheduler_config"], str(path), "scheduler config"),
        source=str(path),
    )
    info = _info_from_metadata(metadata, path)
    unet = build_unet(config, str(path))  # sizes checked before the weights are read
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}).") from exc
    load_weights(unet, state, str(path))
    return Checkpoint(unet=unet, schedule=schedule, info=info, source=path, layout="single-file")


def _read_weights(unet_dir: Path) -> dict[str, torch.Tensor]:
    import torch

    safetensors_path = unet_dir / WEIGHTS_SAFETENSORS
    bin_path = unet_dir / WEIGHTS_BIN
    if safetensors_path.exists():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(safetensors_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{safetensors_path}: corrupt or truncated weights ({exc}).") from exc
    if bin_path.exists():
        try:
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle refusal, truncation, zip errors
            raise CheckpointError(
                f"{bin_path}: cannot be read safely ({type(exc).__name__}: {exc}). Only plain tensors are "
                "accepted (weights_only=True); re-save the model with safetensors."
            ) from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"{bin_path}: expected a state dict, found {type(state).__name__}.")
        return state
    raise CheckpointError(f"{unet_dir}: no {WEIGHTS_SAFETENSORS} (or {WEIGHTS_BIN}) weights file.")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise CheckpointError(f"{path}: {what} missing; the checkpoint folder is incomplete.")
    return path


def _read_json(path: Path, what: str) -> dict[str, Any]:
    _require(path, what)
    return read_json_object(path, what)


# -- saving --------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path,
    checkpoint: Checkpoint,
    *,
    overwrite: bool = False,
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write ``checkpoint`` as a folder in the official layout plus ``disyre.json``, or as a single
    ``.safetensors`` file when ``path`` ends with that extension. Atomic; no silent overwrite.

    ``weights_dtype`` (e.g. ``torch.float16``) shrinks the file; the loader casts back to float32.
    """
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        if path.suffix == ".safetensors":
            save_file(
                _state(checkpoint, weights_dtype),
                str(tmp),
                metadata={
                    "napari_disyre.unet_config": json.dumps(unet_config_dict(checkpoint.unet)),
                    "napari_disyre.scheduler_config": json.dumps(checkpoint.schedule.to_config()),
                    "napari_disyre.info": json.dumps(checkpoint.info.to_dict()),
                },
            )
        else:
            tmp.mkdir()
            write_checkpoint_files(tmp, checkpoint, weights_dtype=weights_dtype)
    return path


def write_checkpoint_files(
    folder: Path, checkpoint: Checkpoint, *, weights_dtype: torch.dtype | None = None
) -> None:
    """Write (or replace) the checkpoint's files in ``folder``, each one atomically.

    Other content of the folder is left alone, which lets training keep its state in ``training/``
    while it refreshes the model beside it.
    """
    from safetensors.torch import save_file

    unet_config = unet_config_dict(checkpoint.unet)
    version = unet_config["_diffusers_version"]
    model_index = {
        "_class_name": "DISYREPipeline",
        "_diffusers_version": version,
        "scheduler": ["diffusion.scheduler", "DISYREScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    }
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler").mkdir(exist_ok=True)
    with atomic_output(folder / "unet" / WEIGHTS_SAFETENSORS, overwrite=True) as tmp:
        save_file(_state(checkpoint, weights_dtype), str(tmp))
    write_json(folder / "unet" / "config.json", unet_config)
    write_json(
        folder / "scheduler" / "scheduler_config.json",
        {**checkpoint.schedule.to_config(), "_diffusers_version": version},
    )
    write_json(folder / METADATA_FILE, checkpoint.info.to_dict())
    write_json(folder / "model_index.json", model_index)


def _state(checkpoint: Checkpoint, weights_dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    return {
        k: (v.to(weights_dtype) if weights_dtype is not None else v).detach().cpu().contiguous()
        for k, v in checkpoint.unet.state_dict().items()
    }
