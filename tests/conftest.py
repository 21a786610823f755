"""Shared fixtures: tiny random networks of the official block types, synthetic scans, checkpoints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tests run tiny networks: one thread is as fast, and two threads of OpenMP spin-waiting for each
# other on a busy 2-core machine made the suite 100x slower (set before torch is first imported).
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

TINY_UNET = dict(
    sample_size=[32, 32],
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(8, 16, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)


def make_unet(seed: int = 0, **overrides):
    """A tiny random UNet2DModel of the official block types (float32, eval mode)."""
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**{**TINY_UNET, **overrides}).eval()


@pytest.fixture(autouse=True, scope="session")
def _cache_folder(tmp_path_factory):
    """Exported ONNX networks (and anything else cached) go to one folder per test session, never the
    user's cache; tests that count exports set their own."""
    folder = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("NAPARI_DISYRE_CACHE")
    os.environ["NAPARI_DISYRE_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("NAPARI_DISYRE_CACHE", None)
    else:
        os.environ["NAPARI_DISYRE_CACHE"] = previous


@pytest.fixture
def tiny_unet():
    return make_unet()


@pytest.fixture
def tiny_checkpoint(tiny_unet):
    from napari_disyre.disyre.checkpoint import Checkpoint, CheckpointInfo
    from napari_disyre.disyre.schedule import Schedule

    return Checkpoint(unet=tiny_unet, schedule=Schedule(), info=CheckpointInfo())


def synthetic_brain(shape=(40, 44, 12), seed: int = 0, lesion: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid 'brain' with smooth texture and a bright blob; returns (intensities, lesion mask)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = sum((g / r) ** 2 for g, r in zip(grids, (0.8, 0.85, 0.9), strict=True))
    brain = radius < 1
    from scipy.ndimage import gaussian_filter

    texture = gaussian_filter(rng.normal(size=shape), 1.5)
    data = np.where(brain, 300 + 60 * texture / texture.std(), 0).astype(np.float32)
    blob = sum((g - c) ** 2 for g, c in zip(grids, (0.25, -0.2, 0.0), strict=True)) < 0.06
    blob &= brain
    if lesion:
        data[blob] += 250
    return data, blob


def two_contrast_patients(root: Path, count: int = 3) -> Path:
    """``count`` patient folders ``P0 ..`` under ``root``, each with flair.nii.gz and t2.nii.gz on one
    2 mm grid (the t2 inverts the brain's intensities)."""
    for seed in range(count):
        folder = root / f"P{seed}"
        folder.mkdir(parents=True)
        data, _ = synthetic_brain(shape=(64, 72, 12), seed=seed, lesion=False)
        t2 = np.where(data > 0, 900 - data, 0).astype(np.float32)
        for name, volume in (("flair", data), ("t2", t2)):
            nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0])), folder / f"{name}.nii.gz")
    return root


@pytest.fixture
def patients(tmp_path):
    """Three patient folders, each with flair.nii.gz and t2.nii.gz on one grid."""
    return two_contrast_patients(tmp_path / "patients")


@pytest.fixture
def one_torch_thread():
    """Two torch threads on a shared 2-core machine run ~20x slower than one (OpenMP contention)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def nifti_scan(tmp_path):
    """A synthetic scan saved as NIfTI with an oblique, anisotropic affine."""
    data, lesion = synthetic_brain()
    affine = oblique_affine()
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def oblique_affine() -> np.ndarray:
    """An anisotropic (0.9 x 1.1 x 2.5 mm) affine rotated 20 degrees about two axes, LPS-ish."""
    a, b = np.deg2rad(20), np.deg2rad(-15)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-0.9, -1.1, 2.5])
    affine[:3, 3] = [30.5, -12.25, 7.0]
    return affine


def run_torchrun(argv: list[str], ranks: int = 2):
    """``napari-disyre argv`` under ``torchrun --standalone`` with ``ranks`` CPU processes (gloo), one
    torch thread each; the completed process, checked to have succeeded."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               "-m", "napari_disyre.cli", *argv]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


# -- small builders shared by several test modules --------------------------------------------------

TINY = dict(
    sample_size=[32, 32],
    layers_per_block=1,
    block_out_channels=[8, 16, 16],
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    norm_num_groups=8,
)


def window_stack(shape, seed=0):
    """Slices with a zero border (background) and values in [0, 1], like preprocessed MRI."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 1.0, size=shape).astype(np.float32)
    x[:, :3] = 0
    x[:, :, -4:] = 0
    return x


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) with the SHA-256 of its content."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = oblique_affine() if affine is None else affine
    image = nib.Nifti1Image(np.asarray(data), None)
    image.header.set_sform(affine, code=2)  # as it is: a singular affine has no qform to encode it
    nib.save(image, path)
    return path


def brain(seed: int = 0) -> np.ndarray:
    return synthetic_brain(seed=seed)[0]


def two_channel_checkpoint(seed: int = 0):
    """A tiny DISYRE checkpoint of two contrasts, flair and t2."""
    from napari_disyre.disyre.checkpoint import Checkpoint, CheckpointInfo
    from napari_disyre.disyre.schedule import Schedule

    return Checkpoint(
        unet=make_unet(seed, in_channels=2, out_channels=2),
        schedule=Schedule(),
        info=CheckpointInfo(contrasts=("flair", "t2")),
    )


def two_contrasts(tmp_path, shift=(0.0, 0.0, 0.0), shape=(40, 44, 12)):
    """A FLAIR-like and a T2-like synthetic scan of one brain, saved; the T2 one moved by ``shift`` mm."""
    flair, lesion = synthetic_brain(shape)
    t2 = np.where(flair > 0, 1000 - flair, 0).astype(np.float32)  # another contrast, same brain
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    paths = {"flair": tmp_path / "case_flair.nii.gz", "t2": tmp_path / "case_t2.nii.gz"}
    nib.save(nib.Nifti1Image(flair, affine), paths["flair"])
    moved = affine.copy()
    moved[:3, 3] += shift
    nib.save(nib.Nifti1Image(t2[tuple(slice(0, s) for s in shape)], moved), paths["t2"])
    return paths, lesion


# -- training through the CLI: a tiny network in place of the small preset --------------------------

TINY_PRESET = """
import dataclasses
from napari_disyre.training import presets
from tests.conftest import TINY
small = presets.PRESETS["small"]
presets.PRESETS["small"] = dataclasses.replace(
    small, unet={**small.unet, **TINY}, crop=64, batch_size=2, steps=4, warmup_steps=1,
    preprocessing=dataclasses.replace(small.preprocessing, spacing=(1.5, 1.5, 4.0)),
)
"""  # a network that trains in a second on the CPU, for the CLI (here and in a subprocess)


def healthy_folder(folder: Path, seeds=range(3)) -> Path:
    for seed in seeds:
        data, _ = synthetic_brain(shape=(64, 72, 16), seed=seed, lesion=False)
        save(folder / f"sub-{seed}_T1w.nii.gz", data, np.diag([2.0, 2.0, 2.0, 1.0]))
    return folder


@pytest.fixture
def tiny_preset():
    """The small preset shrunk to a tiny network and four steps for the test, restored after it."""
    from napari_disyre.training import presets

    small = presets.PRESETS["small"]
    exec(TINY_PRESET, {})
    yield
    presets.PRESETS["small"] = small


def interrupting(step_function, after: int):
    calls = []

    def wrapped(*args):
        if len(calls) == after:
            raise KeyboardInterrupt
        calls.append(1)
        return step_function(*args)

    return wrapped


# -- the napari plugin ------------------------------------------------------------------------------


@pytest.fixture
def viewer(request, napari_settings):
    """napari's test viewer where OpenGL is available (a real or virtual display), else the Qt-free
    ViewerModel: the widget only uses the model's API, and offscreen Qt has no OpenGL for canvases."""
    import os

    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        from napari.components import ViewerModel
        from napari.plugins import _initialize_plugins

        _initialize_plugins()  # a Viewer does this; the bare model does not
        return ViewerModel()
    return request.getfixturevalue("make_napari_viewer")()


@pytest.fixture
def checkpoint_dir(tmp_path, tiny_checkpoint):
    from napari_disyre.disyre.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path / "ckpt", tiny_checkpoint)


@pytest.fixture
def errors(monkeypatch):
    """Messages the widget shows as napari error notifications."""
    shown: list[str] = []
    monkeypatch.setattr("napari_disyre.plugin.notices.show_error", shown.append)
    return shown


@pytest.fixture
def napari_settings(monkeypatch):
    """napari's settings in memory: the widget sets napari's NIfTI reader, never in the user's file."""
    from napari import settings

    fresh = settings.NapariSettings(config_path=None)
    monkeypatch.setattr(settings, "_SETTINGS", fresh)
    return fresh


@pytest.fixture
def scan_path(tmp_path):
    data, _ = synthetic_brain(shape=(40, 44, 12))
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, oblique_affine()), path)
    return path


@pytest.fixture
def widget(qtbot, viewer, scan_path, checkpoint_dir):
    from napari_disyre.plugin.widget import DetectionWidget

    viewer.open(str(scan_path), plugin="napari-disyre")
    widget = DetectionWidget(viewer)
    widget.checkpoint.value = str(checkpoint_dir)
    widget.device.value = "cpu"
    widget.steps.value = 2
    qtbot.addWidget(widget)
    return widget


def click_detect(qtbot, widget):
    """Click Detect anomalies and wait for the run to end."""
    from qtpy.QtCore import Qt

    qtbot.mouseClick(widget.detect_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)  # a shared, loaded CPU can be slow


# -- Bernoulli diffusion training through the CLI ---------------------------------------------------

#: ``train --method berdiff`` in seconds: the small preset, batches of 2, 2 autoencoder steps.
BERDIFF_FAST = [
    "--method",
    "berdiff",
    "--preset",
    "small",
    "--batch-size",
    "2",
    "--ae-steps",
    "2",
    "--noise-level",
    "3",
]


@pytest.fixture(scope="module")
def healthy_t1_scans(tmp_path_factory):
    """Three healthy synthetic T1 scans (1.5 x 1.5 x 3 mm) in one folder."""
    folder = tmp_path_factory.mktemp("healthy")
    for i in range(3):
        data, _ = synthetic_brain(shape=(40, 44, 12), seed=i, lesion=False)
        nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0])), folder / f"sub-{i}_T1w.nii.gz")
    return folder
