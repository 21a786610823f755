"""Everything napari-disyre refuses, in one place: bad input in, the exact error class and message, exit
code 2, and not one file written or changed anywhere under the test folder (checksums before and after,
hidden files included). The README's "What is refused and why" lists the same classes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_disyre.cli import build_parser, main
from napari_disyre.disyre.checkpoint import save_checkpoint
from napari_disyre.errors import CheckpointError, DisyreError, InputError, OutputError, OutputExistsError
from napari_disyre.scans.nifti import Volume, load_scan

from .conftest import (
    TINY_PRESET,
    brain,
    healthy_folder,
    interrupting,
    make_unet,
    save,
    snapshot,
    synthetic_brain,
)


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# -- each case: a setup that writes the bad input and returns the command, the error class, the message --


def zero_affine(t, c):
    return ["detect", str(save(t / "s.nii.gz", brain(), np.zeros((4, 4)))), "--out-dir", str(t / "o")]


def singular_affine(t, c):
    affine = np.eye(4)
    affine[:3, 1] = affine[:3, 0]  # the y axis points along x
    return ["detect", str(save(t / "s.nii.gz", brain(), affine)), "--out-dir", str(t / "o")]


def five_d(t, c):
    return [
        "detect",
        str(save(t / "s.nii.gz", np.zeros((8, 8, 8, 2, 3), np.float32))),
        "--out-dir",
        str(t / "o"),
    ]


def two_d(t, c):
    return ["detect", str(save(t / "s.nii.gz", brain()[:, :, :1])), "--out-dir", str(t / "o")]


def nan_scan(t, c):
    data = brain()
    data[3, 4, 5] = np.nan
    return ["detect", str(save(t / "s.nii.gz", data)), "--out-dir", str(t / "o")]


def header_shape(t, c):
    image = nib.Nifti1Image(brain(), np.eye(4))
    raw = bytearray(image.header.binaryblock + b"\0" * 4 + image.dataobj.astype(np.float32).tobytes("F"))
    raw[42:48] = np.array([30000, 30000, 30000], "<i2").tobytes()  # dim[1:4]: a 27-billion-voxel claim
    (t / "s.nii").write_bytes(bytes(raw))
    return ["detect", str(t / "s.nii"), "--out-dir", str(t / "o")]


def out_map_is_scan(t, c):
    scan = str(save(t / "s.nii.gz", brain()))
    return ["detect", scan, "--out-map", scan, "--overwrite"]


def out_map_is_out_mask(t, c):
    return ["detect", str(save(t / "s.nii.gz", brain())), "--out-map", str(t / "m.nii.gz"), "--out-mask", str(t / "m.nii.gz")]  # fmt: skip


def out_dir_not_writable(t, c):
    (t / "file").write_text("a file, not a folder")
    return ["detect", str(save(t / "s.nii.gz", brain())), "--out-dir", str(t / "file" / "out")]


def scan_twice(t, c):
    scan = str(save(t / "s.nii.gz", brain()))
    return ["detect", scan, str(t / "." / "s.nii.gz"), "--out-dir", str(t / "o")]


def existing_output(t, c):
    (t / "o").mkdir()
    (t / "o" / "a_anomaly_map.nii.gz").write_bytes(b"precious")
    for name in ("a", "b"):
        save(t / "in" / f"{name}.nii.gz", brain())
    return ["detect", str(t / "in"), "--out-dir", str(t / "o")]


def sample_size(value):
    def setup(t, c):
        edit_json(c / "unet" / "config.json", sample_size=value)
        return ["detect", str(save(t / "s.nii.gz", brain())), "--out-dir", str(t / "o")]

    return setup


def tiny_spacing(t, c):
    edit_json(c / "disyre.json", preprocessing={"spacing": [0.001, 0.001, 0.001]})
    return ["detect", str(save(t / "s.nii.gz", brain())), "--out-dir", str(t / "o")]


def scheduler_zero_steps(t, c):
    edit_json(c / "scheduler" / "scheduler_config.json", num_train_timesteps=0)
    return ["detect", str(save(t / "s.nii.gz", brain())), "--out-dir", str(t / "o")]


def pairs(text: str | bytes, *, with_files: bool = True):
    def setup(t, c):
        if with_files:
            save(t / "a.nii.gz", brain(1))
            save(t / "b.nii.gz", brain(2))
            save(t / "la.nii.gz", synthetic_brain(seed=1)[1].astype(np.uint8))
            save(t / "lb.nii.gz", synthetic_brain(seed=2)[1].astype(np.uint8))
        path = t / "pairs.csv"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["evaluate", "--pairs", str(path), "--out", str(t / "report")]

    return setup


def all_empty_labels(t, c):
    save(t / "scans" / "a.nii.gz", brain())
    save(t / "labels" / "a.nii.gz", np.zeros(brain().shape, np.uint8))
    return ["evaluate", "--scans", str(t / "scans"), "--labels", str(t / "labels"), "--out", str(t / "r")]


def report_over_scans(t, c):
    save(t / "scans" / "a.nii.gz", brain())
    save(t / "labels" / "a.nii.gz", synthetic_brain()[1].astype(np.uint8))
    return ["evaluate", "--scans", str(t / "scans"), "--labels", str(t / "labels"), "--out", str(t / "scans"), "--overwrite"]  # fmt: skip


REFUSALS = {
    "zero affine": (zero_affine, InputError, r"s\.nii\.gz: the scan's affine gives a voxel size of 0 mm"),
    "singular affine": (singular_affine, InputError, r"s\.nii\.gz: the scan's affine is singular"),
    "5D scan": (five_d, InputError, r"has 5 dimensions \(shape \(8, 8, 8, 2, 3\)\)"),
    "2D scan": (two_d, InputError, r"2D images and single slices cannot be analysed"),
    "NaN voxel": (nan_scan, InputError, r"has 1 NaN or infinite voxels"),
    "corrupt header shape": (header_shape, InputError, r"shape \(30000, 30000, 30000\).*header is corrupt"),
    "--out-map is the scan": (out_map_is_scan, OutputError, r"this output is the input .*s\.nii\.gz"),
    "--out-map is --out-mask": (out_map_is_out_mask, OutputError, r"two outputs are both to be written here"),
    "output folder not writable": (out_dir_not_writable, OutputError, r"cannot be written, .*file is a file"),
    "scan given twice": (scan_twice, InputError, r"this scan is given more than once"),
    "output exists (cohort)": (existing_output, OutputExistsError, r"already exists.*--skip-existing"),
    "sample_size 0": (sample_size(0), CheckpointError, r"sample_size is \(0, 0\), outside .* \(8 to 1024\)"),
    "sample_size -4": (sample_size(-4), CheckpointError, r"sample_size is \(-4, -4\), outside"),
    "sample_size 100000": (
        sample_size(100000),
        CheckpointError,
        r"sample_size is \(100000, 100000\), outside",
    ),
    "spacing 0.001 mm": (
        tiny_spacing,
        CheckpointError,
        r"disyre\.json: .*voxel spacing of \(0\.001.*0\.1 to 10",
    ),
    "scheduler T = 0": (
        scheduler_zero_steps,
        CheckpointError,
        r"scheduler_config\.json: num_train_timesteps must",
    ),
    "pairs: short row": (
        pairs("scan,label\na.nii.gz\n"),
        InputError,
        r"pairs\.csv, line 2: 1 cell\(s\) where",
    ),
    "pairs: Latin-1": (pairs("scan,label\nä.nii.gz,la.nii.gz\n".encode("latin-1")), InputError, r"not UTF-8"),
    "pairs: header only": (pairs("scan,label\n"), InputError, r"has its header but no rows"),
    "pairs: no header": (pairs("a.nii.gz,la.nii.gz\n"), InputError, r"needs a header with the columns"),
    "pairs: empty cell": (
        pairs("scan,label\na.nii.gz,la.nii.gz\nb.nii.gz,\n"),
        InputError,
        r"line 3: the label cell is empty",
    ),  # fmt: skip
    "pairs: row twice": (
        pairs("scan,label\na.nii.gz,la.nii.gz\n./a.nii.gz,la.nii.gz\n"),
        InputError,
        r"appears twice",
    ),  # fmt: skip
    "--out holds the scans": (
        report_over_scans,
        OutputError,
        r"is the input .*a\.nii\.gz or a folder holding it",
    ),
    "labels all empty": (all_empty_labels, InputError, r"no label marks any anomalous voxel .*n/a"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_with_a_clear_error_exit_2_and_nothing_written(case, tmp_path, checkpoint_dir, capsys, monkeypatch):
    setup, error_class, message = REFUSALS[case]
    work = tmp_path / "work"
    work.mkdir()
    argv = [*setup(work, checkpoint_dir), "-c", str(checkpoint_dir), "--device", "cpu", "-q"]
    before = snapshot(tmp_path)
    # every refusal comes before the model runs
    monkeypatch.setattr("napari_disyre.detection.pipeline.restore_stack", lambda *a, **k: pytest.fail("the model ran"))
    args = build_parser().parse_args(argv)
    with pytest.raises(error_class, match=message):
        args.run(args)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"napari-disyre {argv[0]}: error: ") and "Traceback" not in err
    assert err.count("\n") == 1, "one line"
    assert snapshot(tmp_path) == before


# -- the library runs the same checks as the loader -----------------------------------------------


@pytest.mark.parametrize(
    ("data", "affine", "message"),
    [
        (brain()[:, :, 0], np.eye(4), r"has shape \(40, 44\).*2D images"),
        (np.where(brain() > 0, np.nan, 0).astype(np.float32), np.eye(4), r"NaN or infinite"),
        (brain(), np.zeros((4, 4)), r"voxel size of 0 mm"),
        (brain(), np.diag([1.0, 1.0, 0.0, 1.0]), r"voxel size of 0 mm"),
        (np.ones((5, 5, 5), np.float32), np.eye(4), r"every voxel of this scan has the value 1"),
    ],
)
def test_detect_refuses_an_in_memory_volume_the_loader_would_refuse(tiny_checkpoint, data, affine, message):
    from napari_disyre.detection.pipeline import detect

    with pytest.raises(InputError, match=message):
        detect(Volume(np.asarray(data), affine), tiny_checkpoint, device="cpu")


def test_load_scan_refuses_a_zero_affine_file(tmp_path):
    path = save(tmp_path / "s.nii.gz", brain(), np.zeros((4, 4)))
    with pytest.raises(InputError, match="voxel size of 0 mm"):
        load_scan(path)


def test_a_read_only_folder_is_found_before_any_work(tmp_path, monkeypatch):
    """A read-only mount or immutable folder: the probe file cannot be created (root ignores chmod,
    so the file system's refusal is simulated)."""
    from napari_disyre.outputs import check_writable

    def refuse(self, *args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "touch", refuse)
    with pytest.raises(
        OutputError, match=r"out/map\.nii\.gz: cannot be written, .* not writable \(Read-only file"
    ):
        check_writable(tmp_path / "out" / "map.nii.gz")


def test_a_failing_cleanup_never_hides_the_real_error(tmp_path, monkeypatch):
    from napari_disyre import outputs

    monkeypatch.setattr(outputs, "_remove", lambda path: (_ for _ in ()).throw(PermissionError("cleanup")))
    with pytest.raises(ValueError, match="the real error"), outputs.atomic_output(tmp_path / "x.txt") as tmp:
        tmp.write_text("half")
        raise ValueError("the real error")


def test_checkpoint_sizes_are_refused_before_the_network_is_allocated(checkpoint_dir, monkeypatch):
    from diffusers import UNet2DModel

    from napari_disyre import load_checkpoint

    monkeypatch.setattr(UNet2DModel, "from_config", lambda *a, **k: pytest.fail("allocated"))
    edit_json(checkpoint_dir / "unet" / "config.json", block_out_channels=[2048, 2048, 2048], layers_per_block=8)
    with pytest.raises(CheckpointError, match=r"about \d+ billion parameters"):
        load_checkpoint(checkpoint_dir)


def test_steps_beyond_the_schedule_and_bad_betas_name_the_file(checkpoint_dir):
    from napari_disyre import load_checkpoint

    config = checkpoint_dir / "scheduler" / "scheduler_config.json"
    edit_json(config, beta_end=1.5)
    with pytest.raises(CheckpointError, match=rf"{config}: betas must lie strictly between 0 and 1"):
        load_checkpoint(checkpoint_dir)


# -- not refusals, but what keeps data safe ------------------------------------------------------


def test_scans_of_the_same_name_get_outputs_named_after_their_folders(tmp_path):
    from napari_disyre.cli.detect import plan_jobs

    a, b, other = (
        tmp_path / "p1" / "a" / "T1.nii.gz",
        tmp_path / "p2" / "a" / "T1.nii.gz",
        tmp_path / "b.nii.gz",
    )
    for path in (a, b, other):
        save(path, brain())
    args = build_parser().parse_args(
        ["detect", str(a), str(b), str(other), "--out-dir", str(tmp_path / "o"), "-q"]
    )
    jobs = plan_jobs(args)
    assert [j.out_map.name for j in jobs] == [
        "p1_a_T1_anomaly_map.nii.gz",
        "p2_a_T1_anomaly_map.nii.gz",
        "b_anomaly_map.nii.gz",
    ]
    assert len({p for j in jobs for p in j.outputs}) == 6


def test_skip_existing_finishes_an_interrupted_cohort_without_touching_finished_outputs(
    tmp_path, checkpoint_dir, capsys
):
    for name in ("a", "b"):
        save(tmp_path / "in" / f"{name}.nii.gz", brain())
        for kind in ("map", "mask"):
            save(tmp_path / "o" / f"{name}_anomaly_{kind}.nii.gz", np.ones((2, 2, 2), np.float32), np.eye(4))
    before = snapshot(tmp_path)
    argv = [
        "detect",
        str(tmp_path / "in"),
        "--out-dir",
        str(tmp_path / "o"),
        "-c",
        str(checkpoint_dir),
        "--skip-existing",
    ]
    assert main(argv) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_coarse_slices_are_warned_about_before_the_model_runs(tiny_checkpoint, monkeypatch):
    from napari_disyre.detection import pipeline as detection
    from napari_disyre.scans.preprocessing import Preprocessing

    monkeypatch.setattr(
        detection, "prepare_scan", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop"))
    )
    checkpoint = tiny_checkpoint.with_info(preprocessing=Preprocessing(spacing=(1.5, 1.5, 1.5)))
    thick = Volume(brain(), np.diag([1.0, 1.0, 7.0, 1.0]))
    coarse = pytest.warns(
        detection.CoarseScanWarning, match=r"1x1x7 mm are far coarser than the model's 1.5 mm"
    )
    with coarse, pytest.raises(RuntimeError, match="stop"):
        next(detection.iter_detect(thick, checkpoint))
    fine = Volume(brain(), np.diag([1.0, 1.0, 3.0, 1.0]))  # 2 x the model's grid: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", detection.CoarseScanWarning)
        with pytest.raises(RuntimeError, match="stop"):
            next(detection.iter_detect(fine, checkpoint))


def test_every_refusal_is_a_disyre_error():
    assert all(issubclass(cls, DisyreError) for _, cls, _ in REFUSALS.values())


# -- saved maps are reused only for exactly what made them --------------------------------------


def test_saved_maps_are_reused_only_for_the_same_model_settings_and_scan(tmp_path, monkeypatch, capsys):
    from napari_disyre.detection import checkpoint_fingerprint
    from napari_disyre.detection import pipeline as detection
    from napari_disyre.disyre.checkpoint import Checkpoint, CheckpointInfo
    from napari_disyre.disyre.schedule import Schedule
    from napari_disyre.evaluation.cases import Case
    from napari_disyre.evaluation.scoring import load_case, score_case

    first, second = (Checkpoint(make_unet(seed=s), Schedule(), CheckpointInfo()) for s in (0, 1))
    assert checkpoint_fingerprint(first) != checkpoint_fingerprint(second)
    data, lesion = synthetic_brain(shape=(24, 24, 6))
    case = Case(
        "p1",
        save(tmp_path / "a" / "s.nii.gz", data),
        save(tmp_path / "a" / "l.nii.gz", lesion.astype(np.uint8)),
    )
    maps, options = tmp_path / "maps", {"device": "cpu", "crop": True}
    # another data set whose case has the same id
    other = Case(
        "p1", save(tmp_path / "b" / "s.nii.gz", synthetic_brain(shape=(24, 24, 6), seed=5)[0]), case.label
    )
    made = score_case(load_case(case), first, [1], (), maps_dir=maps, detect_options=options).scores[
        "DISYRE S=1"
    ]
    before = snapshot(tmp_path)
    monkeypatch.setattr(detection, "restore_stack", lambda *a, **k: pytest.fail("the model ran"))
    reused = score_case(load_case(case), first, [1], (), maps_dir=maps, detect_options=options).scores[
        "DISYRE S=1"
    ]
    np.testing.assert_array_equal(reused, made)
    with pytest.raises(
        InputError, match=r"p1_S1_anomaly_map\.nii\.gz: this saved map was made with another checkpoint"
    ):
        score_case(load_case(case), second, [1], (), maps_dir=maps, detect_options=options)
    with pytest.raises(InputError, match=r"another options"):
        score_case(load_case(case), first, [1], (), maps_dir=maps, detect_options={**options, "crop": False})
    # the other data set's case of the same id: refused, with or without a model
    for model in (first, None):
        with pytest.raises(InputError, match=r"made with another scan"):
            score_case(load_case(other), model, [1], (), maps_dir=maps, detect_options=options)
    # a map without its record cannot be vouched for when a model is named (only without one)
    (maps / "p1_S1_anomaly_map.json").rename(tmp_path / "record.json")
    with pytest.raises(InputError, match=r"without a record of the model"):
        score_case(load_case(case), first, [1], (), maps_dir=maps, detect_options=options)
    assert "DISYRE S=1" in score_case(load_case(case), None, [1], (), maps_dir=maps).scores
    (tmp_path / "record.json").rename(maps / "p1_S1_anomaly_map.json")
    assert snapshot(tmp_path) == before
    # the command line refuses the other checkpoint's maps with exit code 2
    checkpoint_dir = save_checkpoint(tmp_path / "second", second)
    (tmp_path / "pairs.csv").write_text("scan,label,id\na/s.nii.gz,a/l.nii.gz,p1\n")
    before = snapshot(tmp_path)
    argv = ["evaluate", "-c", str(checkpoint_dir), "--pairs", str(tmp_path / "pairs.csv")]
    argv += ["--maps", str(maps), "--steps", "1", "--device", "cpu", "-q"]
    capsys.readouterr()
    assert main(argv) == 2
    assert "this saved map was made with another checkpoint" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


# -- SIGTERM (kill, timeout, job schedulers) removes partial outputs like Ctrl-C -----------------

SLOW_SAVE = """
import sys, time, nibabel
from napari_disyre.cli import main
def slow(image, path):
    path.write_bytes(b"half")  # a partial output, as a real save leaves mid-way
    print("WRITING", flush=True)
    time.sleep(60)
nibabel.save = slow
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_detect_leaves_no_partial_file_and_says_how_to_go_on(tmp_path, checkpoint_dir):
    import os
    import signal
    import subprocess
    import sys

    scan = save(tmp_path / "in" / "s.nii.gz", brain())
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [
        "detect",
        str(scan),
        "--out-dir",
        str(out),
        "-c",
        str(checkpoint_dir),
        "--steps",
        "1",
        "--device",
        "cpu",
        "-q",
    ]
    with subprocess.Popen([sys.executable, "-c", SLOW_SAVE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:  # fmt: skip
        assert proc.stdout.readline().strip() == "WRITING"
        assert any(p.name.startswith(".s_anomaly_map.partial-") for p in out.iterdir())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "interrupted during" in err and "--skip-existing" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before  # the partial map is gone; the empty out folder holds nothing


def test_sigterm_inside_an_atomic_write_removes_the_partial_file(tmp_path):
    import os
    import signal

    from napari_disyre.outputs import Terminated, atomic_output, terminate_as_interrupt

    with pytest.raises(Terminated), terminate_as_interrupt(), atomic_output(tmp_path / "map.nii.gz") as tmp:
        tmp.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is uninstalled afterwards


def test_an_interrupted_evaluation_says_what_was_kept(tmp_path, checkpoint_dir, monkeypatch, capsys):
    save(tmp_path / "scans" / "a.nii.gz", brain())
    save(tmp_path / "labels" / "a.nii.gz", synthetic_brain()[1].astype(np.uint8))
    monkeypatch.setattr(
        "napari_disyre.evaluation.scoring.score_case",
        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt),
    )
    argv = [
        "evaluate",
        "-c",
        str(checkpoint_dir),
        "--scans",
        str(tmp_path / "scans"),
        "--labels",
        str(tmp_path / "labels"),
    ]
    assert main([*argv, "--maps", str(tmp_path / "maps"), "--out", str(tmp_path / "r"), "-q"]) == 130
    err = capsys.readouterr().err
    assert (
        "interrupted: no report was written" in err
        and f"kept in {tmp_path / 'maps'} and a rerun reuses them" in err
    )
    assert not (tmp_path / "r").exists()


def test_two_scans_of_one_stem_in_a_folder_are_refused_not_merged(tmp_path):
    from napari_disyre.evaluation.cases import cases_by_name

    for name in ("case1.nii", "case1.nii.gz"):
        save(tmp_path / "scans" / name, brain())
        save(tmp_path / "labels" / name, synthetic_brain()[1].astype(np.uint8))
    with pytest.raises(InputError, match=r"the case id case1 appears twice"):
        cases_by_name(tmp_path / "scans", tmp_path / "labels")


@pytest.fixture
def interrupted_run(tmp_path, monkeypatch) -> tuple[list[str], Path]:
    """The argv of a tiny CLI training and its --out folder, interrupted after 2 of its 4 steps."""
    from napari_disyre.training import loop

    exec(TINY_PRESET, {})
    monkeypatch.setattr(loop, "_optimisation_step", interrupting(loop._optimisation_step, after=2))
    out = tmp_path / "run" / "model"
    argv = ["train", str(healthy_folder(tmp_path / "run" / "healthy")), "--out", str(out), "--val-count", "0",
            "--device", "cpu", "--save-every", "100"]  # fmt: skip
    assert main(argv) == 130
    monkeypatch.undo()
    exec(TINY_PRESET, {})  # undo restored nothing of it: PRESETS was changed in place
    return argv, out


@pytest.fixture(autouse=True)
def _small_preset_restored():
    from napari_disyre.training import presets

    small = presets.PRESETS["small"]
    yield
    presets.PRESETS["small"] = small


TRAINING_REFUSALS = {
    "resume: other data": (
        lambda t: ["--resume", "HEALTHY=" + str(healthy_folder(t / "other", seeds=(5, 6, 7)))],
        InputError,
        r"--resume continues the interrupted run .* data: training files \(3 new or changed, 3 gone",
    ),
    "resume: other batch": (lambda t: ["--resume", "--batch-size", "3"], InputError, r"batch_size 2 -> 3"),
    "resume: other crop": (lambda t: ["--resume", "--crop", "96"], InputError, r"crop 64 -> 96"),
    "resume: other seed": (lambda t: ["--resume", "--seed", "3"], InputError, r"seed 0 -> 3"),
    "resume: other preset": (
        lambda t: ["--resume", "--preset", "official"],
        InputError,
        r"preset 'small' -> 'official'",
    ),  # fmt: skip
    "rerun without --resume": (
        lambda t: [],
        OutputExistsError,
        r"an interrupted training run: continue it with --resume",
    ),
}


@pytest.mark.parametrize("case", TRAINING_REFUSALS)
def test_training_refusals_exit_2_and_change_nothing(case, interrupted_run, tmp_path, capsys):
    argv, out = interrupted_run
    changes, error_class, message = TRAINING_REFUSALS[case]
    extra = changes(tmp_path / "new")
    folder = next((e.split("=", 1)[1] for e in extra if e.startswith("HEALTHY=")), argv[1])
    argv = [argv[0], folder, *argv[2:], *(e for e in extra if not e.startswith("HEALTHY="))]
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {out}: " in err and len(err.strip().splitlines()) == 1
    with pytest.raises(error_class, match=message):
        from napari_disyre.cli import build_parser

        args = build_parser().parse_args(argv)
        args.run(args)
    assert snapshot(tmp_path) == before


def test_an_interrupted_training_folder_is_named_as_such(interrupted_run):
    from napari_disyre import load_checkpoint

    _, out = interrupted_run
    with pytest.raises(CheckpointError, match=r"an interrupted training run .* --resume"):
        load_checkpoint(out)


def test_resume_with_more_steps_is_recorded_with_a_warning(interrupted_run, capsys):
    argv, out = interrupted_run
    with pytest.warns(UserWarning, match=r"resuming with steps 4 -> 10"):
        assert main([*argv, "--resume", "--steps", "10"]) == 0
    training = json.loads((out / "disyre.json").read_text())["training"]
    assert training["steps"] == 10 and [r["changed"] for r in training["resumes"]] == [{"steps": [4, 10]}]
    assert training["training_scans"] == [f"sub-{i}_T1w.nii.gz" for i in range(3)]
    record = json.loads((out / "training" / "config.json").read_text())
    assert [Path(f[0][0]).name for f in record["data"]["training"]] == [
        f"sub-{i}_T1w.nii.gz" for i in range(3)
    ]
    assert record["finished"] and record["warmup_steps"] == 0  # the first session's (10 steps alone: 1)
    capsys.readouterr()
    assert main(argv) == 2  # a finished run is not called interrupted
    assert (
        "a finished training run: train it further with --resume and more --steps" in capsys.readouterr().err
    )


SIGTERM_TRAINING = (
    TINY_PRESET
    + """
import sys, time
from napari_disyre.training import loop
from napari_disyre.cli import main
original = loop.training_batches
def slow_third_batch(*args, **kwargs):
    for i, batch in enumerate(original(*args, **kwargs)):
        if i == 2:  # after two steps: waiting for data, as a real run mostly does
            print("TWO STEPS", flush=True)
            time.sleep(60)
        yield batch
loop.training_batches = slow_third_batch
sys.exit(main(sys.argv[1:]))
"""
)


def test_sigterm_saves_the_training_state_and_resume_finishes_it_exactly(tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys

    from safetensors.numpy import load_file

    base = ["train", str(healthy_folder(tmp_path / "healthy")), "--val-count", "0", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), *sys.path])}
    argv = [*base, "--out", str(tmp_path / "killed"), "--save-every", "100"]
    with subprocess.Popen([sys.executable, "-c", SIGTERM_TRAINING, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:  # fmt: skip
        assert "TWO STEPS" in iter(lambda: proc.stdout.readline().strip(), "")  # after the scan count
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Interrupted at step 2; state saved. Continue with --resume." in err and "Traceback" not in err
    exec(TINY_PRESET, {})
    assert main([*argv, "--resume"]) == 0
    assert main([*base, "--out", str(tmp_path / "straight")]) == 0
    weights = "unet/diffusion_pytorch_model.safetensors"
    killed, straight = load_file(tmp_path / "killed" / weights), load_file(tmp_path / "straight" / weights)
    for name in straight:
        np.testing.assert_array_equal(killed[name], straight[name], err_msg=name)


def test_coarse_training_scans_are_warned_about(tmp_path):
    from napari_disyre.detection.pipeline import CoarseScanWarning
    from napari_disyre.scans.preprocessing import Preprocessing
    from napari_disyre.training.dataset import TrainingScan, scan_slices

    data, _ = synthetic_brain(shape=(64, 72, 8), lesion=False)
    thick = save(tmp_path / "thick_T1w.nii.gz", data, np.diag([1.0, 1.0, 7.0, 1.0]))
    spec = Preprocessing(spacing=(1.5, 1.5, 1.5), orientation="RAS")
    with pytest.warns(CoarseScanWarning, match=r"1x1x7 mm are far coarser .* would learn blurred"):
        assert scan_slices(TrainingScan(thick), spec)
    fine = save(tmp_path / "fine_T1w.nii.gz", data, np.diag([2.0, 2.0, 2.0, 1.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoarseScanWarning)
        assert scan_slices(TrainingScan(fine), spec)
