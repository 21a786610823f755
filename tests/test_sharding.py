"""Cohorts split across job-array shards and torchrun ranks: each scan to exactly one process, a
failing scan does not lose the others, and a rerun skips finished outputs."""

from __future__ import annotations

import nibabel as nib
import pytest

from napari_disyre.cli import main
from napari_disyre.detection import pipeline as detection
from napari_disyre.detection.sharding import Shard, agree_on_failures, parse_shard, resolve_shard
from napari_disyre.disyre.checkpoint import save_checkpoint
from napari_disyre.errors import InputError

from .conftest import oblique_affine, synthetic_brain

SCANS = [f"scan{i:02d}" for i in range(11)]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 11, 12])
def test_each_scan_goes_to_exactly_one_shard(count):
    taken = [scan for k in range(count) for scan in parse_shard(f"{k}/{count}").take(SCANS)]
    assert sorted(taken) == SCANS  # every scan once: none lost, none twice
    sizes = [len(Shard(k, count).take(SCANS)) for k in range(count)]
    assert max(sizes) - min(sizes) <= 1


def test_torchrun_ranks_split_a_job_array_shard_with_no_scan_twice():
    taken = []
    for k in range(2):  # a job array of 2 torchrun jobs with 3 ranks each
        for rank in range(3):
            env = {"RANK": str(rank), "WORLD_SIZE": "3", "LOCAL_RANK": str(rank)}
            taken += resolve_shard(f"{k}/2", env).take(SCANS)
    assert sorted(taken) == SCANS
    assert resolve_shard(None, {}) == Shard(0, 1)
    assert resolve_shard(None, {"RANK": "2", "WORLD_SIZE": "4"}).take(SCANS) == ["scan02", "scan06", "scan10"]


@pytest.mark.parametrize("text", ["4/4", "-1/3", "1", "a/b", "0/0"])
def test_bad_shard_is_a_clear_error(text):
    with pytest.raises(InputError, match="--shard"):
        parse_shard(text)


def test_failures_outside_torchrun_are_this_process_s_own():
    assert agree_on_failures(3, {}) == 3
    assert agree_on_failures(0, {"WORLD_SIZE": "1"}) == 0


@pytest.fixture
def cohort(tmp_path, tiny_checkpoint):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for i in range(3):
        data, _ = synthetic_brain(seed=i)
        nib.save(nib.Nifti1Image(data, oblique_affine()), folder / f"s{i}.nii.gz")
    return folder, save_checkpoint(tmp_path / "ckpt", tiny_checkpoint)


def _count_detections(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = detection.iter_detect

    def counting(scan, *args, **kwargs):
        calls.append(scan.path.name if getattr(scan, "path", None) else "?")
        return original(scan, *args, **kwargs)

    monkeypatch.setattr(detection, "iter_detect", counting)
    return calls


def test_shards_write_each_output_once_and_a_rerun_skips_finished_ones(tmp_path, cohort, monkeypatch):
    folder, checkpoint = cohort
    out = tmp_path / "results"
    base = ["detect", str(folder), "-c", str(checkpoint), "--steps", "1", "--device", "cpu", "-q"]
    calls = _count_detections(monkeypatch)
    for k in range(2):
        assert main([*base, "--out-dir", str(out), "--shard", f"{k}/2"]) == 0
    assert len(calls) == 3  # shard 0: s0, s2; shard 1: s1
    maps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert sorted(maps) == [f"s{i}_anomaly_{k}.nii.gz" for i in range(3) for k in ("map", "mask")]

    (out / "s1_anomaly_map.nii.gz").unlink()
    (out / "s1_anomaly_mask.nii.gz").unlink()
    assert main([*base, "--out-dir", str(out)]) == 2  # finished outputs are never replaced silently
    calls.clear()
    assert main([*base, "--out-dir", str(out), "--skip-existing"]) == 0
    assert len(calls) == 1  # only the scan whose outputs were missing
    for name, mtime in maps.items():
        if not name.startswith("s1_"):
            assert (out / name).stat().st_mtime_ns == mtime


def test_a_failing_scan_does_not_lose_the_others(tmp_path, cohort):
    folder, checkpoint = cohort
    (folder / "s1.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "results"
    args = ["detect", str(folder), "-c", str(checkpoint), "--steps", "1", "--device", "cpu", "-q"]
    assert main([*args, "--out-dir", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == [
        f"s{i}_anomaly_{k}.nii.gz" for i in (0, 2) for k in ("map", "mask")
    ]
