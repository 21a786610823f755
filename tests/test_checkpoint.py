"""Checkpoints: the official layout written by diffusers itself loads as is; bad ones fail clearly."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from napari_disyre import load_checkpoint
from napari_disyre.disyre.checkpoint import Checkpoint, CheckpointInfo, save_checkpoint
from napari_disyre.disyre.engine import RestorationSettings, restore
from napari_disyre.disyre.schedule import Schedule
from napari_disyre.errors import CheckpointError
from napari_disyre.restoration import run_to_end
from napari_disyre.sample_data import demo_checkpoint_path
from napari_disyre.scans.preprocessing import Preprocessing

from .conftest import make_unet
from .reference_disyre import restore_slice


class DISYREScheduler(SchedulerMixin, ConfigMixin):
    """Stand-in with the official scheduler's constructor signature, so that diffusers' own
    ``save_pretrained`` writes the scheduler config exactly as the official pipeline does."""

    config_name = "scheduler_config.json"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 100,
        beta_start: float = 1e-3,
        beta_end: float = 2e-1,
        beta_schedule: str = "linear",
        trained_betas=None,
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "trailing",
        steps_offset: int = 0,
        anomaly_score_ssim: bool = False,
    ):
        pass


class DISYREPipeline(DiffusionPipeline):
    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)


def official_checkpoint(folder, unet, safe_serialization=True):
    DISYREPipeline(unet=unet, scheduler=DISYREScheduler()).save_pretrained(
        folder, safe_serialization=safe_serialization
    )
    return folder


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "bin"])
def test_official_layout_loads_and_restores_like_the_reference(tmp_path, safe_serialization):
    unet = make_unet(seed=3)
    folder = official_checkpoint(tmp_path / "official", unet, safe_serialization)
    assert (folder / "model_index.json").exists()
    weights = "diffusion_pytorch_model.safetensors" if safe_serialization else "diffusion_pytorch_model.bin"
    assert (folder / "unet" / weights).exists()
    checkpoint = load_checkpoint(folder)
    assert checkpoint.layout == "official"
    assert checkpoint.window == (32, 32)
    assert checkpoint.info.preprocessing == Preprocessing()  # the official preprocessing
    assert checkpoint.schedule.timesteps(4).tolist() == [99, 74, 49, 24]
    for name, tensor in unet.state_dict().items():
        torch.testing.assert_close(checkpoint.unet.state_dict()[name], tensor, rtol=0, atol=0)
    slices = np.random.default_rng(0).uniform(0, 1, (1, 40, 45)).astype(np.float32)
    for method in ("mean-single-step", "multi-step-restoration"):
        result = run_to_end(
            restore(
                slices, checkpoint.unet, checkpoint.schedule, RestorationSettings(method=method), batch_size=1
            )
        )
        expected, _ = restore_slice(unet, slices[0], 4, method, True)
        np.testing.assert_allclose(result.anomaly_map[0], expected, atol=1e-5)


def test_integer_sample_size_is_accepted(tmp_path):
    folder = official_checkpoint(tmp_path / "official", make_unet(sample_size=32))
    assert load_checkpoint(folder).window == (32, 32)


@pytest.mark.parametrize("suffix", ["folder", "file.safetensors"])
def test_project_checkpoint_round_trip(tmp_path, suffix):
    info = CheckpointInfo(
        contrast="T1",
        preprocessing=Preprocessing(
            spacing=(1.5, 1.5, 1.5), orientation="RAS", percentile_region="foreground"
        ),
        steps=6,
        healthy_score_quantiles={"0.999": 0.25},
        training={"training_scans": ["a.nii.gz"]},
    )
    original = Checkpoint(unet=make_unet(seed=5), schedule=Schedule(), info=info)
    path = save_checkpoint(tmp_path / suffix, original)
    loaded = load_checkpoint(path)
    assert loaded.info == info
    assert loaded.layout == ("napari-disyre" if suffix == "folder" else "single-file")
    x = torch.rand(2, 1, 32, 32)
    t = torch.tensor([10, 90])
    with torch.no_grad():
        torch.testing.assert_close(loaded.unet(x, t).sample, original.unet(x, t).sample, rtol=0, atol=0)
    if suffix == "folder":  # also loadable as the official layout
        assert json.loads((path / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DModel"]
        assert json.loads((path / "unet" / "config.json").read_text())["sample_size"] == [32, 32]


def test_float16_weights_load_back_as_float32(tmp_path):
    original = Checkpoint(unet=make_unet(), schedule=Schedule(), info=CheckpointInfo())
    path = save_checkpoint(tmp_path / "half", original, weights_dtype=torch.float16)
    loaded = load_checkpoint(path)
    assert next(loaded.unet.parameters()).dtype == torch.float32
    for name, tensor in original.unet.state_dict().items():
        torch.testing.assert_close(loaded.unet.state_dict()[name], tensor.half().float())


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_saved_weights_get_the_usual_file_permissions(tmp_path, umask):
    # safetensors creates its file readable by the owner alone (0o600); a shared model must follow
    # the umask like any other file
    checkpoint = Checkpoint(unet=make_unet(), schedule=Schedule(), info=CheckpointInfo())
    previous = os.umask(umask)
    try:
        folder = save_checkpoint(tmp_path / "ckpt", checkpoint)
        single = save_checkpoint(tmp_path / "ckpt.safetensors", checkpoint)
    finally:
        os.umask(previous)
    for path in (folder / "unet" / "diffusion_pytorch_model.safetensors", folder / "disyre.json", single):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_saving_never_overwrites_silently(tmp_path):
    checkpoint = Checkpoint(unet=make_unet(), schedule=Schedule(), info=CheckpointInfo())
    save_checkpoint(tmp_path / "ckpt", checkpoint)
    with pytest.raises(Exception, match="already exists"):
        save_checkpoint(tmp_path / "ckpt", checkpoint)


def _official(tmp_path, **unet_overrides):
    return official_checkpoint(tmp_path / "ckpt", make_unet(**unet_overrides))


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda f: __import__("shutil").rmtree(f / "unet"), "no unet/ folder"),
        (
            lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
            "no diffusion_pytorch_model",
        ),
        (lambda f: (f / "scheduler" / "scheduler_config.json").unlink(), "scheduler config missing"),
        (lambda f: (f / "unet" / "config.json").write_text("{not json"), "not valid JSON"),
        (
            lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 20),
            "corrupt or truncated",
        ),
        (
            lambda f: _edit_json(f / "unet" / "config.json", down_block_types=["FancyDownBlock2D"] * 3),
            "unsupported UNet block type.*FancyDownBlock2D",
        ),
        (
            lambda f: _edit_json(f / "unet" / "config.json", block_out_channels=[8, 16, 32]),
            "do not fit the UNet config",
        ),
        (
            lambda f: _edit_json(f / "scheduler" / "scheduler_config.json", timestep_spacing="leading"),
            "trailing",
        ),
    ],
    ids=[
        "no-unet",
        "no-weights",
        "no-scheduler",
        "bad-json",
        "bad-weights",
        "unknown-block",
        "wrong-shapes",
        "spacing",
    ],
)
def test_broken_checkpoints_give_one_clear_error(tmp_path, break_it, message):
    folder = _official(tmp_path)
    break_it(folder)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(folder)
    assert str(tmp_path) in str(error.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"format": "napari-disyre-berdiff"},
            "not a napari-disyre DISYRE metadata file.*'napari-disyre-berdiff'",
        ),
        ({"format_version": 99}, "newer napari-disyre.*version 99, this one reads up to 1.*upgrade"),
    ],
    ids=["other-format", "newer-version"],
)
def test_foreign_or_newer_disyre_metadata_is_refused(tmp_path, tiny_checkpoint, changes, message):
    folder = save_checkpoint(tmp_path / "model", tiny_checkpoint)
    _edit_json(folder / "disyre.json", **changes)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(folder)
    assert str(folder / "disyre.json") in str(error.value)


def test_three_input_channels_and_one_output_are_refused(tmp_path):
    folder = official_checkpoint(tmp_path / "rgb", make_unet(in_channels=3, out_channels=1))
    with pytest.raises(CheckpointError, match="in_channels = 3 and out_channels = 1.*same number in and out"):
        load_checkpoint(folder)


def test_an_official_three_channel_unet_loads_with_generic_channel_names(tmp_path):
    """The official layout has no disyre.json: its channels are named by position."""
    folder = official_checkpoint(tmp_path / "three", make_unet(in_channels=3, out_channels=3))
    assert load_checkpoint(folder).contrasts == ("channel1", "channel2", "channel3")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint") as error:
        load_checkpoint(tmp_path / "notes.txt")
    assert "state dict" not in str(error.value)
    (tmp_path / "binaryae_ema_30000.th").write_bytes(b"not read")  # the official code's file names
    with pytest.raises(
        CheckpointError,
        match=r"binaryae_ema_30000\.th: not a checkpoint.*bare PyTorch state dict.*import-berdiff",
    ):
        load_checkpoint(tmp_path / "binaryae_ema_30000.th")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no unet/ folder"):
        load_checkpoint(tmp_path)


def test_pickled_code_in_bin_weights_is_refused(tmp_path):
    folder = official_checkpoint(tmp_path / "ckpt", make_unet(), safe_serialization=False)
    weights = folder / "unet" / "diffusion_pytorch_model.bin"
    torch.save({"payload": _Exploit()}, weights)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(folder)
    assert not (tmp_path / "pwned").exists()


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {__import__('tempfile').gettempdir()}/pwned",))


def test_legacy_attention_names_are_renamed(tmp_path):
    unet = make_unet()
    folder = official_checkpoint(tmp_path / "old", unet, safe_serialization=False)
    state = torch.load(folder / "unet" / "diffusion_pytorch_model.bin", weights_only=True)
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for key, value in state.items():
        for new, old in renames.items():
            if ".attentions." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
        legacy[key] = value
    assert any(".query." in k for k in legacy)
    torch.save(legacy, folder / "unet" / "diffusion_pytorch_model.bin")
    loaded = load_checkpoint(folder)
    for name, tensor in unet.state_dict().items():
        torch.testing.assert_close(loaded.unet.state_dict()[name], tensor)


def _edit_json(path, **changes):
    value = json.loads(path.read_text())
    value.update(changes)
    path.write_text(json.dumps(value))


def test_bundled_demo_checkpoint_fits_the_package_budget():
    """The demo checkpoint ships inside the package: at most 15 MB, a T1 model on the 1.5 mm RAS
    grid, with the healthy 99.9th percentile the widget suggests as threshold (0.082 when bundled)."""
    folder = demo_checkpoint_path()
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 15_000_000
    checkpoint = load_checkpoint(folder)
    assert checkpoint.info.contrast == "T1"
    assert tuple(checkpoint.info.preprocessing.spacing) == (1.5, 1.5, 1.5)
    assert checkpoint.info.preprocessing.orientation == "RAS"
    assert checkpoint.info.healthy_score_quantiles["0.999"] == pytest.approx(0.0823, abs=1e-4)


def test_checkpoint_info_is_read_without_loading_the_network(tmp_path, tiny_checkpoint):
    import shutil
    import subprocess
    import sys

    from napari_disyre.disyre.checkpoint import read_checkpoint_info

    folder = save_checkpoint(
        tmp_path / "s8", tiny_checkpoint.with_info(steps=8, method="multi-step-restoration")
    )
    single = save_checkpoint(tmp_path / "s3.safetensors", tiny_checkpoint.with_info(steps=3, contrast="T2"))
    info = read_checkpoint_info(folder)
    assert (info.steps, info.method) == (8, "multi-step-restoration")
    assert (read_checkpoint_info(single).steps, read_checkpoint_info(single).contrast) == (3, "T2")
    official = tmp_path / "official"
    shutil.copytree(folder, official)
    (official / "disyre.json").unlink()
    assert (
        read_checkpoint_info(official) == CheckpointInfo()
    )  # the official defaults: S = 4, mean-single-step
    with pytest.raises(CheckpointError, match="no unet/ folder"):
        read_checkpoint_info(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint_info(tmp_path / "missing")
    code = (
        "import sys; from napari_disyre.disyre.checkpoint import read_checkpoint_info as read; "
        f"ok = read({str(single)!r}).steps == 3 and read({str(folder)!r}).steps == 8; "
        "sys.exit(0 if ok and 'torch' not in sys.modules else 1)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_checkpoint_cache_reloads_only_when_the_files_change(tmp_path, tiny_checkpoint):
    from napari_disyre.detection.checkpoint_cache import CheckpointCache

    cache = CheckpointCache()
    folder = save_checkpoint(tmp_path / "model", tiny_checkpoint)
    first = cache.get(folder)
    assert cache.get(folder) is first
    save_checkpoint(folder, tiny_checkpoint.with_info(steps=7), overwrite=True)
    second = cache.get(folder)
    assert second is not first and second.info.steps == 7
    single = save_checkpoint(tmp_path / "model.safetensors", tiny_checkpoint.with_info(steps=5))
    third = cache.get(single)
    assert third.info.steps == 5 and cache.get(single) is third
    assert cache.get(folder) is not second  # one model held: going back loads again
