"""Issue 27, class 4 (one validation layer): the Python API, the checkpoint JSON and the training state
refuse what they cannot use with a DisyreError, never an AttributeError, TypeError, KeyError or
RecursionError from deep inside, and never a silent default. The property tests draw option values
and JSON fields at random across the layer (Hypothesis)."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_disyre import Volume, default_settings, detect, load_checkpoint
from napari_disyre.berdiff.inference import InferenceSettings
from napari_disyre.berdiff.run import BerDiffRunConfig
from napari_disyre.detection.postprocess import MapPostprocessing
from napari_disyre.disyre.engine import RestorationSettings, restore
from napari_disyre.errors import CheckpointError, DisyreError
from napari_disyre.sample_data import bundled_checkpoint
from napari_disyre.training.config import TrainingConfig

from .conftest import synthetic_brain

AFFINE = np.diag([1.5, 1.5, 1.5, 1.0])


@pytest.fixture(scope="module")
def demo():
    return load_checkpoint("demo")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: detect(Volume(synthetic_brain()[0].tolist(), AFFINE), c), "data: must be a numpy array"),
        (lambda c: detect(Volume(synthetic_brain()[0], None), c), "affine None: must be the 4x4"),
        (lambda c: detect(Volume(synthetic_brain()[0], AFFINE), "demo"), "checkpoint 'demo': must be a loaded"),
        (lambda c: detect(Volume(synthetic_brain()[0], AFFINE), c, {"steps": 2}), "settings must be the checkpoint's own"),
        (lambda c: detect(synthetic_brain()[0], c), "scan must be a Volume"),
        (lambda c: default_settings(c, steps="4"), "steps '4': must be a whole number"),
        (lambda c: default_settings(c, steps=2.5), "steps 2.5: must be a whole number"),
        (lambda c: default_settings("demo"), "must be a loaded checkpoint"),
        (lambda c: RestorationSettings(steps=0), "steps 0: input should be greater than or equal to 1"),
        (lambda c: InferenceSettings(threshold=float("nan")), "threshold nan: must be a finite number"),
        (lambda c: TrainingConfig(learning_rate=float("nan")), "learning_rate nan: must be a finite number"),
        (lambda c: TrainingConfig(steps="4"), "steps '4': must be a whole number"),
        (lambda c: next(restore([[[0.0]]], c.unet, c.schedule)), "slices: must be a numpy array"),
        (lambda c: Volume(np.zeros((4, 4, 4), np.complex64), AFFINE), "complex"),
        (lambda c: Volume(np.zeros((4, 4, 4), [("R", "u1"), ("G", "u1"), ("B", "u1")]), AFFINE), "RGB"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_the_python_api_refuses_wrong_types_with_a_disyre_error(demo, call, message):
    with pytest.raises(DisyreError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(demo)


def _berdiff_copy(tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "bd"
    shutil.copytree(bundled_checkpoint("demo-berdiff"), folder)
    meta = json.loads((folder / "berdiff.json").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = meta
        for name in parents:
            target = target[name]
        target[key] = value
    (folder / "berdiff.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"autoencoder__image_size": "128"}, r"autoencoder\.image_size '128': must be a whole number"),
        ({"autoencoder__nf": 2048, "autoencoder__ch_mult": [2048] * 8}, "million weights"),
        ({"latent_unet__block_out_channels": []}, r"latent_unet\.block_out_channels: list should have at least 1"),
        ({"inference__threshold": 1.5}, r"inference\.threshold 1\.5"),
        ({"inference__tresh": 0.5}, r"inference\.tresh .*extra inputs are not permitted"),
        ({"schedule__beta_end": None}, r"schedule\.beta_end None"),
    ],
)
def test_berdiff_json_is_checked_against_its_schema_before_any_allocation(tmp_path, monkeypatch, changes, message):
    from napari_disyre.berdiff import checkpoint

    monkeypatch.setattr(checkpoint, "BinaryAutoencoder", lambda *a: pytest.fail("allocated before the check"))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_berdiff_copy(tmp_path, **changes))


def test_deeply_nested_or_huge_json_is_refused_not_a_recursion_error(tmp_path):
    folder = _berdiff_copy(tmp_path)
    (folder / "berdiff.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="nested 100000 levels deep"):
        load_checkpoint(folder)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(bundled_checkpoint("demo"), ckpt)
    info = json.loads((ckpt / "disyre.json").read_text())
    nested: list = [1]
    for _ in range(40):  # a fresh variant: deep, but small enough for json itself
        nested = [nested]
    (ckpt / "disyre.json").write_text(json.dumps({**info, "training": {"a": nested}}))
    with pytest.raises(CheckpointError, match="levels deep"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": "4"}, r"steps '4': must be a whole number"),  # the kind: a string for a number
        ({"step": 8}, r"step 8: extra inputs are not permitted"),  # a misspelt key is not a default
        ({"healthy_score_quantiles": {"0.999": float("nan")}}, r"healthy_score_quantiles\.0\.999 nan"),
        ({"postprocessing": {"median": 1000}}, r"postprocessing\.median 1000: input should be less than or equal to 15"),
    ],
)
def test_disyre_json_is_checked_against_its_schema(tmp_path, changes, message):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(bundled_checkpoint("demo"), ckpt)
    info = json.loads((ckpt / "disyre.json").read_text())
    (ckpt / "disyre.json").write_text(json.dumps({**info, **changes}))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ckpt)


def test_a_state_file_that_is_not_a_training_state_is_refused(tmp_path):
    import torch

    from napari_disyre.training.state import read_state

    path = tmp_path / "state.pt"
    for content, message in (
        (torch.zeros(3), "not a training state \\(it holds a Tensor\\)"),
        ({"step": 3}, "unet: field required"),
        ({"step": -1, "unet": {}, "optimizer": {}, "lr_schedule": {}}, "step -1: input should be greater"),
    ):
        torch.save(content, path)
        with pytest.raises(DisyreError, match=message):
            read_state(path)


# -- properties: whatever is drawn, accepted as given or refused with a DisyreError ---------------

ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-3, 300), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
CONFIGS = {
    TrainingConfig: ["steps", "batch_size", "crop", "learning_rate", "save_every", "validate_every", "seed",
                     "workers", "spacing", "grad_clip", "ema"],
    BerDiffRunConfig: ["ae_steps", "diffusion_steps", "noise_level", "threshold", "save_every", "seed", "spacing"],
    RestorationSettings: ["steps", "spacing", "weight_foreground", "overlap", "fast"],
    InferenceSettings: ["noise_level", "threshold", "sample_code", "seed"],
    MapPostprocessing: ["erosion", "median"],
}  # fmt: skip
FIELDS = [(cls, name) for cls, names in CONFIGS.items() for name in names]


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b or (isinstance(a, list | tuple) and isinstance(b, list | tuple) and list(a) == list(b))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=ANYTHING)
def test_every_option_is_kept_as_given_or_refused_with_a_disyre_error(field, value):
    cls, name = field
    try:
        made = cls(**{name: value})
    except DisyreError:
        return
    kept = getattr(made, name)
    assert _same(kept, value), (name, value, kept)  # as given: never replaced by a default
    assert isinstance(kept, bool) == isinstance(value, bool), (name, value)  # True is not 1
    assert not isinstance(value, str | dict), (name, value)  # "4" is not 4
    assert not (isinstance(value, float) and not math.isfinite(value)), (name, value)


DISYRE_FIELDS = ["contrast", "steps", "method", "weight_foreground", "healthy_score_quantiles", "description",
                 "postprocessing", "preprocessing", "training", "format_version", "unknown_key"]  # fmt: skip
BERDIFF_FIELDS = [("autoencoder", k) for k in ("image_size", "nf", "ch_mult", "codebook_bits", "norm_groups")] + [
    ("latent_unet", k) for k in ("bits", "latent_size", "block_out_channels", "attention_levels")
] + [("schedule", k) for k in ("steps", "beta_start", "forward")] + [("inference", k) for k in ("noise_level", "threshold")]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(DISYRE_FIELDS), value=ANYTHING)
def test_any_disyre_json_field_is_read_as_written_or_refused(name, value):
    from napari_disyre.disyre.checkpoint import CheckpointInfo

    info = json.loads((bundled_checkpoint("demo") / "disyre.json").read_text())
    try:
        read = CheckpointInfo.from_dict({**info, name: value}, "disyre.json")
    except CheckpointError:
        return
    if name in ("steps", "weight_foreground", "contrast", "description", "method"):
        assert _same(getattr(read, name), value), (name, value)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(BERDIFF_FIELDS), value=ANYTHING)
def test_any_berdiff_json_field_is_read_or_refused_before_allocation(tmp_path_factory, field, value):
    from napari_disyre.berdiff.bernoulli import BernoulliSchedule
    from napari_disyre.berdiff.layout import read_berdiff_metadata
    from napari_disyre.berdiff.presets import AutoencoderConfig, LatentUNetConfig

    folder = _berdiff_copy(tmp_path_factory.mktemp("bd"), **{f"{field[0]}__{field[1]}": value})
    try:
        meta = read_berdiff_metadata(folder)
        AutoencoderConfig.from_dict(meta["autoencoder"])
        LatentUNetConfig.from_dict(meta["latent_unet"])
        BernoulliSchedule.from_dict(meta["schedule"])
        InferenceSettings(**meta["inference"])
    except DisyreError:
        return
    assert _same(meta[field[0]][field[1]], value)


FLAGS = {
    "train": ["--steps", "--lr", "--crop", "--batch-size", "--save-every", "--seed", "--workers", "--noise-level",
              "--flip-threshold", "--val-count"],
    "detect": ["--threshold", "--min-size", "--median", "--erode", "--steps", "--noise-level", "--flip-threshold"],
    "evaluate": ["--threshold", "--sample-voxels", "--sweep", "--label-values", "--median"],
}  # fmt: skip
TEXTS = st.one_of(
    st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{0,3})?(e-?[0-9]{1,2})?", fullmatch=True),
    st.sampled_from(["nan", "inf", "-inf", "NaN", "1e309", "auto", "4,2", "1,,x", "0x10", " 3", "", "True"]),
    st.text(max_size=5),
)


@settings(max_examples=150, deadline=None)
@given(flag=st.sampled_from([(c, f) for c, flags in FLAGS.items() for f in flags]), text=TEXTS)
def test_every_command_line_number_is_parsed_as_typed_or_refused(flag, text):
    from napari_disyre.cli import build_parser

    command, option = flag
    base = {"train": ["train", "h", "--out", "o"], "detect": ["detect", "s.nii"], "evaluate": ["evaluate"]}
    parser = build_parser()
    try:
        args = parser.parse_args([*base[command], f"{option}={text}"])
    except SystemExit as exit_:
        assert exit_.code == 2
        return
    value = getattr(args, option.lstrip("-").replace("-", "_"))
    numbers = [float(v) for v in text.split(",")] if text not in ("auto",) else []
    if text == "auto":
        assert value == "auto"
    else:
        assert all(math.isfinite(n) for n in numbers), (option, text, value)
        assert [float(v) for v in (value if isinstance(value, list) else [value])] == numbers


def test_an_argparse_type_error_names_the_reason():
    from napari_disyre.validation import Count, cli_type

    with pytest.raises(argparse.ArgumentTypeError, match="value 2.5: must be a whole number"):
        cli_type(Count)("2.5")
