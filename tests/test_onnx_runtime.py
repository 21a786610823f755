"""ONNX Runtime evaluates the networks of both methods: the same maps as torch (1e-5 relative), one
export per set of weights, torch when the export fails, clear errors where it cannot run."""

from __future__ import annotations

import logging
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from napari_disyre.berdiff.bernoulli import BernoulliSchedule  # noqa: E402
from napari_disyre.berdiff.inference import InferenceSettings, restore_slices  # noqa: E402
from napari_disyre.cli import main  # noqa: E402
from napari_disyre.detection.pipeline import detect  # noqa: E402
from napari_disyre.disyre.engine import RestorationSettings, restore  # noqa: E402
from napari_disyre.disyre.schedule import Schedule  # noqa: E402
from napari_disyre.errors import DisyreError  # noqa: E402
from napari_disyre.restoration import run_to_end  # noqa: E402
from napari_disyre.runtime import onnx_export  # noqa: E402
from napari_disyre.runtime.sessions import (  # noqa: E402
    LOADING_STAGE,
    OnnxNetwork,
    OnnxRuntimeFallback,
    choose_runtime,
    intra_op_threads,
)
from napari_disyre.scans.nifti import Volume  # noqa: E402

from .berdiff_tiny import smooth_slices, tiny_networks  # noqa: E402
from .conftest import make_unet, synthetic_brain  # noqa: E402

CPU = torch.device("cpu")


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference as a fraction of the largest value (maps are 0 over most voxels)."""
    return float(np.abs(a - b).max() / np.abs(b).max())


def _slices(n: int = 2, shape: tuple[int, int] = (41, 50)) -> np.ndarray:
    rng = np.random.default_rng(0)
    stack = rng.uniform(0.2, 1.0, size=(n, *shape)).astype(np.float32)
    stack[:, :5] = 0  # a background band, as a brain slice has
    return stack


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_DISYRE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.fixture
def counted_exports(monkeypatch):
    calls = []
    trace = onnx_export._trace

    def counting(*args, **kwargs):
        calls.append(args[2][0].shape)
        return trace(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "_trace", counting)
    return calls


@pytest.mark.parametrize("method", ["mean-single-step", "multi-step-restoration"])
def test_disyre_maps_on_onnxruntime_equal_torch(method):
    unet, slices = make_unet(), _slices()
    settings = RestorationSettings(steps=3, method=method)
    expected = run_to_end(restore(slices, unet, Schedule(), settings, batch_size=3, runtime="torch"))
    events = []
    result = run_to_end(
        restore(slices, unet, Schedule(), settings, batch_size=3, runtime="onnxruntime"), events.append
    )
    assert (expected.runtime, result.runtime) == ("torch", "onnxruntime")
    assert events[0].describe() == LOADING_STAGE and events[0].fraction == 0
    assert relative_difference(result.anomaly_map, expected.anomaly_map) < 1e-5
    assert result.anomaly_map.max() > 0.01  # a real map, not two zero ones
    # The restorations carried from step to step (multi-step) gather float rounding: 1.4e-5 here, as
    # torch's own batch size 1 instead of 3 moves them by 1.2e-5; the maps stay within 1e-5.
    tolerance = 1e-5 if method == "mean-single-step" else 3e-5
    assert relative_difference(result.final, expected.final) < tolerance
    for ours, theirs in zip(result.restorations, expected.restorations, strict=True):
        assert relative_difference(ours, theirs) < tolerance


def test_berdiff_maps_on_onnxruntime_equal_torch():
    ae, unet = tiny_networks()
    slices, settings = smooth_slices(3), InferenceSettings(noise_level=8, threshold=0.55, seed=2)

    def run(runtime):
        return run_to_end(
            restore_slices(slices, ae, unet, BernoulliSchedule(steps=20), settings, batch_size=2, runtime=runtime)
        )

    expected, result = run("torch"), run("onnxruntime")
    assert result.runtime == "onnxruntime"
    assert relative_difference(result.anomaly_map, expected.anomaly_map) < 1e-5
    assert relative_difference(result.restoration, expected.restoration) < 1e-5
    np.testing.assert_array_equal(result.flip_mask, expected.flip_mask)  # the same bits were masked
    assert expected.anomaly_map.max() > 1e-3


def test_the_export_is_reused_for_the_same_weights_and_redone_for_changed_ones(own_cache, counted_exports):
    unet, slices = make_unet(), _slices(1)
    settings = RestorationSettings(steps=2)

    def run():
        return run_to_end(restore(slices, unet, Schedule(), settings, runtime="onnxruntime")).anomaly_map

    first = run()
    (exported,) = own_cache.glob("disyre-unet-*.onnx")
    written = exported.stat().st_mtime_ns
    assert np.array_equal(run(), first) and len(counted_exports) == 1
    assert exported.stat().st_mtime_ns == written
    with torch.no_grad():
        unet.conv_out.bias += 0.05  # new weights: a new file, never the stale one
    changed = run()
    expected = run_to_end(restore(slices, unet, Schedule(), settings, runtime="torch")).anomaly_map
    assert len(counted_exports) == 2 and len(list(own_cache.glob("disyre-unet-*.onnx"))) == 2
    assert relative_difference(changed, expected) < 1e-5 and not np.allclose(changed, first)
    assert not list(own_cache.glob(".*partial*"))  # written atomically, nothing left behind


def test_a_failed_export_falls_back_to_torch_with_one_line_saying_why(own_cache, monkeypatch):
    unet, slices = make_unet(), _slices(1)

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator\naten::mystery")

    monkeypatch.setattr(torch.onnx, "export", broken)
    expected = run_to_end(restore(slices, unet, Schedule(), RestorationSettings(steps=2), runtime="torch"))
    with pytest.warns(OnnxRuntimeFallback) as caught:
        result = run_to_end(restore(slices, unet, Schedule(), RestorationSettings(steps=2), runtime="onnxruntime"))
    (message,) = [str(w.message) for w in caught]
    assert message == (
        "ONNX Runtime cannot run the disyre-unet (RuntimeError: unsupported operator aten::mystery); "
        "running it on torch"
    )
    assert result.runtime == "torch" and np.array_equal(result.anomaly_map, expected.anomaly_map)
    assert not own_cache.exists() or not list(own_cache.iterdir())  # no half-written file


def _without_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError


def test_runtime_onnxruntime_without_the_package_is_a_clear_error(monkeypatch, tmp_path, nifti_scan):
    _without_onnxruntime(monkeypatch)
    out = tmp_path / "map.nii.gz"
    argv = ["detect", str(nifti_scan), "--out-map", str(out), "--runtime", "onnxruntime", "-q"]
    assert main(argv) == 2
    assert not out.exists()
    with pytest.raises(DisyreError, match=r"pip install onnxruntime onnx.*or use --runtime torch"):
        choose_runtime("onnxruntime", CPU, None)


def test_auto_runs_torch_without_the_package_and_logs_why(monkeypatch, caplog, tiny_checkpoint):
    _without_onnxruntime(monkeypatch)
    data, _ = synthetic_brain((24, 24, 6))
    scan = Volume(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    with caplog.at_level(logging.INFO, logger="napari_disyre.runtime.sessions"), warnings.catch_warnings():
        warnings.simplefilter("error", OnnxRuntimeFallback)
        result = detect(scan, tiny_checkpoint, device="cpu", runtime="auto")
    assert result.runtime == "torch"
    assert "torch, because onnxruntime is not installed (pip install onnxruntime onnx)" in caplog.text


def test_auto_chooses_onnxruntime_only_for_float32_on_the_cpu():
    assert choose_runtime("auto", CPU, None) == "onnxruntime"
    assert choose_runtime("auto", CPU, torch.bfloat16) == "torch"
    assert choose_runtime("auto", torch.device("cuda"), None) == "torch"
    assert choose_runtime("auto", CPU, None, compile=True) == "torch"
    assert choose_runtime("torch", CPU, None) == "torch"
    with pytest.raises(DisyreError, match="runs float32 networks on the CPU, but the networks run on cuda"):
        choose_runtime("onnxruntime", torch.device("cuda"), None)
    with pytest.raises(DisyreError, match="bfloat16 precision was asked"):
        choose_runtime("onnxruntime", CPU, torch.bfloat16)
    with pytest.raises(DisyreError, match="unknown runtime 'tensorrt'"):
        choose_runtime("tensorrt", CPU, None)


def test_onnxruntime_gets_the_cores_torch_would_have_shared_among_local_processes(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert intra_op_threads({}) == 4
    assert intra_op_threads({"LOCAL_WORLD_SIZE": "2"}) == 2
    assert intra_op_threads({"LOCAL_WORLD_SIZE": "8"}) == 1


def test_the_session_uses_the_threads_torch_has():
    """conftest sets OMP_NUM_THREADS=1 before torch starts: torch has one thread, so has the session."""
    from napari_disyre.disyre.acceleration import Network

    network = Network(make_unet(), CPU, None, runtime="onnxruntime")
    assert network.onnx.threads == torch.get_num_threads() == 1
    assert network.onnx.session.get_session_options().intra_op_num_threads == 1
    options = network.onnx.session.get_session_options()
    assert not options.enable_mem_pattern  # it cost memory, no time


def test_the_exported_group_norm_computes_group_norm():
    """One group of 1, 2, 3, 4: mean 2.5, variance 1.25, so (x - 2.5) / sqrt(1.25); then per-channel
    scale and shift. 4-D, 3-D (attention) and 2-D inputs, with and without them, equal torch's."""
    norm = torch.nn.GroupNorm(1, 2, eps=0.0)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 1.0]))
        norm.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).reshape(1, 2, 2, 1)
    expected = np.array([-2.683282, -0.894427, 1.447214, 2.341641])
    got = onnx_export._blocked_group_norm(norm.double(), x).detach().flatten().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    rng = np.random.default_rng(0)
    for shape, affine in [((2, 6, 5, 7), True), ((2, 6, 9), True), ((3, 6), True), ((2, 6, 5, 7), False)]:
        norm = torch.nn.GroupNorm(3, 6, affine=affine).double()
        if affine:
            with torch.no_grad():
                norm.weight.uniform_(0.5, 2)
                norm.bias.uniform_(-1, 1)
        x = torch.from_numpy(rng.normal(3, 0.5, shape))
        np.testing.assert_allclose(onnx_export._blocked_group_norm(norm, x).detach(), norm(x).detach(), atol=1e-12)


def test_onnxruntime_group_norm_is_as_accurate_as_torchs():
    """Groups of 2 x 128 x 128 values with a mean 20 times their spread, as in the official UNet: the
    export's GroupNorm is within 1.5e-6 (of the largest output) of float64, torch's float32 within
    3.3e-7; the exporter's InstanceNormalization was 3.3e-6 away (2.4e-4 on the whole official UNet)."""
    norm = torch.nn.GroupNorm(2, 4).eval()
    x = (1 + 0.05 * np.random.default_rng(0).standard_normal((2, 4, 128, 128))).astype(np.float32)
    path, _ = onnx_export.export_onnx(norm, norm, "group-norm", [x[:1]], ["x"])
    expected = norm.double()(torch.from_numpy(x).double()).detach().numpy()
    assert relative_difference(OnnxNetwork(path, 1)(x), expected) < 1.5e-6
    assert not any(isinstance(m, torch.nn.GroupNorm) and "forward" in vars(m) for m in norm.modules())
