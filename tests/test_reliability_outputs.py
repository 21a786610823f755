"""Issue 27, class 1 (data loss): ``train --overwrite`` builds the new model beside the old one and swaps
it in only when complete; ``--out`` equal to, inside or above an input folder is refused before
anything happens. Each case: the issue's failing probe and a fresh variant."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_disyre.cli import main
from napari_disyre.errors import OutputError
from napari_disyre.outputs import replacing_folder

from .conftest import healthy_folder, interrupting, snapshot

pytestmark = pytest.mark.usefixtures("tiny_preset")


def _train(healthy, out, *extra) -> int:
    return main(["train", str(healthy), "--out", str(out), "--val-count", "0", "--device", "cpu", *extra])


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (lambda h: h, "this output is the input"),  # the probe: --out scans/ --overwrite
        (lambda h: h.parent, "or a folder holding it"),  # a folder above
        (lambda h: h / "model", "inside the input folder"),  # a fresh variant: inside
    ],
    ids=["equal", "above", "inside"],
)
def test_out_equal_to_above_or_inside_the_training_folder_is_refused_and_nothing_changes(
    tmp_path, capsys, where, message
):
    healthy = healthy_folder(tmp_path / "data" / "scans")
    before = snapshot(tmp_path)
    assert _train(healthy, where(healthy), "--steps", "3", "--overwrite") == 2
    assert message in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    healthy = healthy_folder(tmp_path / "scans")
    (tmp_path / "model").write_text("notes")
    assert _train(healthy, tmp_path / "model", "--overwrite") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "model").read_text() == "notes"


def test_a_failed_overwrite_keeps_the_finished_model(tmp_path, monkeypatch, capsys):
    """The issue's case: a finished model given to an --overwrite run that then fails, at the last
    check (a NaN scan) and, the fresh variant, in the middle of training (Ctrl-C at step 2)."""
    from napari_disyre.training import loop

    healthy = healthy_folder(tmp_path / "healthy")
    out = tmp_path / "model"
    assert _train(healthy, out) == 0
    before = snapshot(tmp_path)
    nan_scan = tmp_path / "bad"
    healthy_folder(nan_scan, seeds=(0,))
    import nibabel as nib

    image = nib.load(next(nan_scan.iterdir()))
    data = np.asarray(image.dataobj, np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), next(nan_scan.iterdir()))
    before = snapshot(tmp_path)
    assert _train(nan_scan, out, "--overwrite") == 2
    assert "NaN or infinite voxels" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
    monkeypatch.setattr(loop, "_optimisation_step", interrupting(loop._optimisation_step, after=2))
    assert _train(healthy, out, "--overwrite", "--seed", "4") == 130
    assert f"Interrupted at step 2; {out} was left as it was." in capsys.readouterr().err
    assert snapshot(tmp_path) == before  # no hidden half-built folder either


def test_a_completed_overwrite_replaces_the_model_whole(tmp_path):
    from safetensors.numpy import load_file

    healthy = healthy_folder(tmp_path / "healthy")
    out = tmp_path / "model"
    assert _train(healthy, out) == 0
    (out / "my_notes.txt").write_text("kept only if the folder is not replaced")
    weights = "unet/diffusion_pytorch_model.safetensors"
    old = load_file(out / weights)
    assert _train(healthy, out, "--overwrite", "--seed", "7") == 0
    new = load_file(out / weights)
    assert any(not np.array_equal(old[k], new[k]) for k in old)
    assert not (out / "my_notes.txt").exists()
    assert json.loads((out / "disyre.json").read_text())["training"]["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["healthy", "model"]  # nothing left beside it


def test_replacing_folder_swaps_only_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), replacing_folder(target, replace=True) as staged:
        staged.mkdir()
        (staged / "new.txt").write_text("new")
        raise RuntimeError("failed half-way")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "old.txt").read_text() == "old"
    with replacing_folder(target, replace=True) as staged:
        staged.mkdir()
        (staged / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    with replacing_folder(target, replace=False) as staged:  # a resumed run: built in place
        assert staged == target
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"), replacing_folder(tmp_path / "file", replace=True):
        pass


def test_berdiff_overwrite_failing_keeps_the_old_model(tmp_path, monkeypatch, capsys):
    """Bernoulli diffusion: the same swap (a stage that fails leaves the old folder as it was)."""
    from napari_disyre.berdiff import run

    healthy = healthy_folder(tmp_path / "healthy")
    out = tmp_path / "model"
    out.mkdir()
    (out / "berdiff.json").write_text("{}")  # stands for a finished model: only its survival matters
    before = snapshot(tmp_path)

    def failing(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_autoencoder_stage", failing)
    assert main(["train", str(healthy), "--method", "berdiff", "--out", str(out), "--overwrite",
                 "--val-count", "0", "--device", "cpu"]) == 130  # fmt: skip
    assert snapshot(tmp_path) == before
