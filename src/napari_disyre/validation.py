"""One validation layer: every number a user types or a file claims is checked here, once, at the door.

The command line (argparse ``type=``), the widget's settings, the Python API (``detect``,
``default_settings``, ``TrainingConfig``, ``restore``, ``Volume``) and the JSON readers (``disyre.json``,
``berdiff.json``, a training state; read by :func:`~napari_disyre.checkpoint_files.read_json_object`)
all declare what they accept with the few constrained types and
pydantic models below. A value outside its type is refused with a :class:`DisyreError` that names the
field (or flag) and the value; nothing is coerced (``"4"`` is not 4, 2.5 is not 2, NaN is no number)
and nothing falls back to a default in silence, so no path can skip a check and no wrong value travels
deep enough to end in a traceback. Checkpoint JSON is checked against its schema before any network
is built, so a forged size cannot allocate memory first.
"""

from __future__ import annotations

import argparse
import math
import numbers
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from .errors import DisyreError

# -- the shared constrained types -------------------------------------------------------------------


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"must be a whole number, not {type(value).__name__} {value!r}")
    return int(value)


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"must be a number, not {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"must be a finite number, not {value}")
    return float(value)


MAX_TRAINING_STEPS = 10_000_000
MAX_RESTORATION_STEPS = 1000
MAX_BATCH = 65_536
MAX_BERDIFF_CHANNELS = 4  # contrasts of a Bernoulli diffusion autoencoder (the authors' BraTS models: 4)
MAX_CODE_BITS = 1024  # bits per latent position of a trained autoencoder (the paper: 128)
#: A 3D median of 15^3 voxels already blurs away any lesion a map could show; larger ones only cost
#: memory and hours (the issue's --median 1000 reached 9.3 GB).
MAX_MEDIAN = 15
# what a Bernoulli diffusion restoration is compared with: the input (the official map) or the decoded code
MapReference = Literal["input", "reconstruction"]
MAP_REFERENCES: tuple[str, ...] = get_args(MapReference)

Whole = Annotated[int, BeforeValidator(_whole)]
Count = Annotated[Whole, Field(ge=1)]  # steps, batch sizes: at least one
Size = Annotated[Whole, Field(ge=0)]  # voxel counts and radii: 0 switches the option off
Seed = Annotated[Whole, Field(ge=0, lt=2**32)]
Finite = Annotated[float, BeforeValidator(_finite)]
Probability = Annotated[Finite, Field(ge=0, le=1)]
#: A learning rate above 1 makes AdamW diverge at once (the issue's 1e6 gave NaN weights); 0 trains
#: nothing, which a test of a checkpoint's start (--init) may want.
LearningRate = Annotated[Finite, Field(ge=0, le=1)]
#: Voxel sizes a model grid may have, in mm: finer allocates huge grids, coarser has no brain left.
GRID_MM = (0.1, 10.0)
GridMm = Annotated[Finite, Field(ge=GRID_MM[0], le=GRID_MM[1])]


def _grid(spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    low, high = GRID_MM
    if not all(low <= s <= high for s in spacing):
        raise ValueError(
            f"a voxel spacing of {spacing} mm is outside {low:g} to {high:g} mm (a brain at 0.001 mm would "
            "need a grid of 10^15 voxels)"
        )
    return spacing


Flag = Annotated[bool, Field(strict=True)]
Text = Annotated[str, Field(strict=True, max_length=10_000)]
#: A checkpoint's input channels by contrast name, in channel order (disyre.json, berdiff.json).
ContrastNames = Annotated[list[Annotated[str, Field(strict=True, max_length=100)]], Field(max_length=64)]
Spacing = Annotated[tuple[Finite, Finite, Finite], AfterValidator(_grid)]
#: Training crops: the network halves them up to 3 times, and windows are at least 16 px.
Crop = Annotated[Count, Field(ge=16, le=1024, multiple_of=8)]
RestorationSteps = Annotated[Count, Field(le=MAX_RESTORATION_STEPS)]
#: Bernoulli diffusion's noise level L: reverse steps, fewer than the schedule's 1000.
NoiseLevel = Annotated[Count, Field(le=999)]
CodeBits = Annotated[Count, Field(le=MAX_CODE_BITS)]  # bits per latent position of a binary code
Median = Annotated[Size, Field(le=MAX_MEDIAN)]


class Declared(BaseModel):
    """A set of options: unknown names are refused (a misspelt option is not a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def check(model: type[BaseModel], values: dict[str, Any], where: str, *, error: type[DisyreError] = DisyreError,
          names: dict[str, str] | None = None) -> BaseModel:  # fmt: skip
    """``values`` validated against ``model``; a :class:`DisyreError` (``error``) naming each wrong field
    (by its flag in ``names`` where given) otherwise."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = [_problem(e, names or {}) for e in exc.errors()]
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise error(f"{where}: " + "; ".join(problems[:4]) + more + ".") from None


def _problem(error: dict[str, Any], names: dict[str, str]) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "value"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    shown = f" {value!r}" if not isinstance(value, dict | list | np.ndarray) and len(repr(value)) < 60 else ""
    return f"{names.get(field, field)}{shown}: {message[:1].lower()}{message[1:]}"


def cli_type(kind: Any, *, words: tuple[str, ...] = ()) -> Any:
    """An argparse ``type=`` that reads a number (or one of ``words``) and checks it against ``kind``;
    argparse then refuses a bad value with the reason, exit status 2, before anything runs."""
    adapter = TypeAdapter(kind)

    def parse(text: str) -> Any:
        if text in words:
            return text
        value: Any = text
        for read in (int, float):
            try:
                value = read(text)
                break
            except ValueError:
                continue
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError("; ".join(_problem(e, {}) for e in exc.errors())) from None

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def cli_list(kind: Any, meaning: str) -> Any:
    """An argparse ``type=`` for a comma-separated list of ``kind`` (``1,2,4``), each checked, so that a
    wrong list is refused before the first scan is computed; ``meaning`` says what the values are."""
    item = cli_type(kind)

    def parse(text: str) -> list[Any]:
        try:
            values = [item(v.strip()) for v in text.split(",") if v.strip()]
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(
                f"takes comma-separated {meaning}, got {text!r} ({exc})"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"takes comma-separated {meaning}, got {text!r}")
        return values

    return parse


# -- options: what the CLI, the widget and the API accept -----------------------------------------


class TrainingOptions(Declared):
    """The numbers of a DISYRE training run (:class:`~napari_disyre.training.config.TrainingConfig`)."""

    steps: Annotated[Count, Field(le=MAX_TRAINING_STEPS)] | None = None
    batch_size: Annotated[Count, Field(le=MAX_BATCH)] | None = None
    crop: Crop | None = None
    learning_rate: LearningRate = 1e-4
    adam_betas: tuple[Annotated[Finite, Field(ge=0, lt=1)], Annotated[Finite, Field(ge=0, lt=1)]] = (
        0.95,
        0.999,
    )
    weight_decay: Annotated[Finite, Field(ge=0, le=1)] = 1e-6
    adam_epsilon: Annotated[Finite, Field(gt=0, le=1)] = 1e-8
    warmup_steps: Size | None = None
    grad_clip: Annotated[Finite, Field(gt=0)] = 1.0
    ema: Flag = False
    ema_max_decay: Probability = 0.9999
    ema_inv_gamma: Annotated[Finite, Field(gt=0)] = 1.0
    ema_power: Annotated[Finite, Field(gt=0)] = 0.75
    validate_every: Count = 500
    save_every: Count = 1000
    log_every: Count = 10
    validation_examples: Annotated[Count, Field(le=MAX_BATCH)] = 64
    seed: Seed = 0
    spacing: Spacing | None = None
    workers: Annotated[Size, Field(le=256)] | None = None


class BerDiffOptions(Declared):
    """The numbers of a Bernoulli diffusion training run: steps, batches, and the L and P it stores."""

    ae_steps: Annotated[Count, Field(le=MAX_TRAINING_STEPS)] | None = None
    diffusion_steps: Annotated[Count, Field(le=MAX_TRAINING_STEPS)] | None = None
    ae_batch_size: Annotated[Count, Field(le=MAX_BATCH)] | None = None
    diffusion_batch_size: Annotated[Count, Field(le=MAX_BATCH)] | None = None
    spacing: Spacing | None = None
    noise_level: NoiseLevel = 100
    threshold: Probability = 0.6
    save_every: Count = 250
    seed: Seed = 0
    contrasts: Annotated[ContrastNames, Field(max_length=MAX_BERDIFF_CHANNELS)] = []
    code_size: CodeBits | None = None


class RestorationOptions(Declared):
    """DISYRE restoration settings (:class:`~napari_disyre.disyre.engine.RestorationSettings`)."""

    steps: RestorationSteps = 4
    method: str = "mean-single-step"
    spacing: Literal["official", "exact"] = "official"
    weight_foreground: Flag = True
    overlap: Annotated[Finite, Field(gt=0, le=1)] = 0.25
    sigma_scale: Annotated[Finite, Field(gt=0, le=10)] = 0.125
    fast: Flag = False


class InferenceOptions(Declared):
    """Bernoulli diffusion settings (:class:`~napari_disyre.berdiff.inference.InferenceSettings`)."""

    noise_level: NoiseLevel = 100
    threshold: Probability = 0.6
    sample_code: Flag = True
    seed: Seed = 0
    reference: MapReference = "input"


class MapOptions(Declared):
    """Map post-processing (``disyre.json``'s default too); each is also bounded by the volume
    (:func:`~napari_disyre.detection.postprocess.bounded_by_volume`)."""

    erosion: Size = 0
    median: Median = 0


def _voxels(data: Any) -> Any:
    if not (hasattr(data, "shape") and hasattr(data, "dtype")):
        raise ValueError(f"must be a numpy array, not {type(data).__name__}; wrap it with numpy.asarray(...)")
    kind = np.dtype(data.dtype)
    if kind.names or kind.kind not in "biuf":
        what = "RGB or structured" if kind.names else "complex" if kind.kind == "c" else "not numbers"
        raise ValueError(
            f"holds {kind} values ({what}); a scan has one real intensity per voxel: keep the magnitude "
            "or one channel"
        )
    return data


def _affine(affine: Any) -> np.ndarray:
    try:
        matrix = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        matrix = np.zeros(0)
    if affine is None or matrix.shape != (4, 4):
        raise ValueError("must be the 4x4 voxel-to-world matrix (nibabel: img.affine)")
    return matrix


def _loaded_checkpoint(checkpoint: Any) -> Any:
    if getattr(checkpoint, "kind", None) not in ("disyre", "berdiff"):
        raise ValueError(
            f"must be a loaded checkpoint, not {type(checkpoint).__name__} {checkpoint!r:.40}: "
            "load_checkpoint(path) first (load_checkpoint('demo') for the bundled one)"
        )
    return checkpoint


class SegmentationOptions(Declared):
    """A map's threshold and smallest kept component (``threshold_mask``, ``--threshold``, ``--min-size``)."""

    threshold: Finite
    min_size: Size = 0


class VolumeFields(Declared):
    """What a :class:`~napari_disyre.scans.nifti.Volume` built in Python must hold (3D, finite and
    an invertible affine are then checked by ``check_scan``, as for a file)."""

    data: Annotated[Any, AfterValidator(_voxels)]
    affine: Annotated[Any, AfterValidator(_affine)]


#: The settings attribute that tells each method's settings apart, and their class.
_SETTINGS = {"disyre": ("steps", "RestorationSettings"), "berdiff": ("noise_level", "InferenceSettings")}


class DetectArguments(Declared):
    """``detect``/``iter_detect``: a loaded checkpoint, and settings (if any) of its own method."""

    checkpoint: Annotated[Any, AfterValidator(_loaded_checkpoint)]
    settings: Any = None

    @model_validator(mode="after")
    def _settings_of_its_method(self) -> DetectArguments:
        marker, name = _SETTINGS[self.checkpoint.kind]
        if self.settings is not None and (
            isinstance(self.settings, dict) or not hasattr(self.settings, marker)
        ):
            raise ValueError(
                f"settings must be the checkpoint's own {name}, not {type(self.settings).__name__}: make them "
                "with default_settings(checkpoint, **changes)"
            )
        return self


def _slice_stack(slices: Any) -> Any:
    if _voxels(slices).ndim not in (3, 4):
        raise ValueError(f"must be a stack of slices (N, H, W) or (N, C, H, W), not of shape {slices.shape}")
    return slices


def _restoration_settings(settings: Any) -> Any:
    if not hasattr(settings, "window_overlap"):
        raise ValueError(f"must be RestorationSettings, not {type(settings).__name__}")
    return settings


class RestoreArguments(Declared):
    """``restore``: model-grid slices and DISYRE settings."""

    slices: Annotated[Any, AfterValidator(_slice_stack)]
    settings: Annotated[Any, AfterValidator(_restoration_settings)]


def _case_id(text: str) -> str:
    if text == "pooled":
        raise ValueError("'pooled' names the report's row of all cases together; give this case another id")
    if "/" in text or "\\" in text or ".." in text or text.strip() != text or not text.strip():
        raise ValueError(
            "must be a plain name (no '/', '\\', '..' or surrounding spaces): it names the case's saved maps"
        )
    return text


class CaseFields(Declared):
    """An evaluation case's id: a report row and a file name under ``--maps``."""

    id: Annotated[str, Field(strict=True, max_length=200), AfterValidator(_case_id)]


# -- files: the JSON a checkpoint or a run folder claims ------------------------------------------


Quantiles = Annotated[dict[Annotated[str, Field(max_length=16)], Finite], Field(max_length=64)]
Record = dict[str, Any]  # free provenance (training record): bounded by the reader's size and depth


class PreprocessingJson(Declared):
    percentiles: tuple[Annotated[Finite, Field(ge=0, le=100)], Annotated[Finite, Field(ge=0, le=100)]] = (
        0.0,
        98.0,
    )
    percentile_region: Literal["volume", "foreground"] = "volume"
    slice_axis: Literal[0, 1, 2] = 2
    spacing: Spacing | None = None
    orientation: Annotated[str, Field(strict=True, min_length=3, max_length=3)] | None = None


class _StateFields(BaseModel):
    """The plain values of a ``training/state.pt`` (its tensors are checked by ``load_state_dict``)."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)
    elapsed_s: Annotated[Finite, Field(ge=0)] = 0.0


class DisyreStateFields(_StateFields):
    step: Size
    unet: dict[str, Any]
    optimizer: dict[str, Any]
    lr_schedule: dict[str, Any]
    ema: dict[str, Any] | None = None


class BerDiffStateFields(_StateFields):
    stage_name: Literal["autoencoder", "diffusion"]
    stage: dict[str, Any] | None = None
