"""SIGKILL at five points of a small real run (voc-real, 40 images, the voc_cpu preset scaled down), each
time resumed: the final metrics and per-image artefacts equal an uninterrupted run's.

Opt-in (a few minutes of two cores): ``SALMASK_KILL_REAL=1``; skipped without ``../shared`` data.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from salmask.io import read_json

from conftest import ROOT, assert_same_artefacts, run_salmask, salmask_env

VOC_REAL = ROOT.parent / "shared" / "data" / "voc-real"
U2NETP = ROOT.parent / "shared" / "weights" / "u2netp.onnx"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("SALMASK_KILL_REAL") != "1", reason="opt-in: SALMASK_KILL_REAL=1"),
    pytest.mark.skipif(not (VOC_REAL / "VOCdevkit").is_dir() or not U2NETP.is_file(),
                       reason="voc-real or u2netp.onnx not found under ../shared"),
]

SMALL = ("dataset.max_images=40", "num_workers=0", "cam.epochs=2", "cam.batch_size=8", "cam.crop=128",
         "cam.resize_long=[96,192]", "cam.scales=[1.0]", "boundary.epochs=2", "boundary.batch_size=8",
         "boundary.crop=128", "seg.iterations=20", "seg.checkpoint_every=5", "seg.batch_size=4", "seg.crop=128",
         "select.sweep=false", "saliency.batch_size=1")
"""voc_cpu at 40 images (both splits), one scale, small crops, few steps: every stage runs, quickly."""

EVALS = ("eval_cam", "eval_pseudo", "eval_select", "eval_seg")
PER_IMAGE = ("make_cam", "saliency", "make_boundary_labels", "make_boundary", "make_pseudo")


def _args(work: Path) -> list[str]:
    return ["run", "voc_cpu", f"dataset.root={VOC_REAL}", f"saliency.model={U2NETP}", f"work_dir={work}", *SMALL]


def _count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


KILL_POINTS = [
    ("train_cam, second epoch", lambda w: (w / "train_cam" / "last.pt").is_file()),
    ("make_cam, 15 images in", lambda w: _count(w / "make_cam", "*.npz") >= 15),
    ("saliency, 15 images in", lambda w: _count(w / "saliency", "*.png") >= 15),
    ("make_boundary, 15 images in", lambda w: _count(w / "make_boundary", "*.npz") >= 15),
    ("train_seg, after a checkpoint", lambda w: (w / "train_seg" / "last.pt").is_file()),
]


def kill_sequence(work: Path) -> list[str]:
    """Start the run, SIGKILL it at each of :data:`KILL_POINTS` in turn (restarting it after each), then let
    it finish; returns the kill points survived."""
    survived = []
    for name, ready in KILL_POINTS:
        proc = subprocess.Popen([sys.executable, "-m", "salmask", *_args(work)], env=salmask_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 3600
            while not ready(work) and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            alive = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(60)
        assert alive and ready(work), f"the run ended before kill point {name!r}"
        survived.append(name)
    run_salmask(_args(work), timeout=3600)
    return survived


def assert_same_run(ref: Path, work: Path) -> None:
    assert not list(work.rglob("*.tmp"))
    for st in EVALS:
        assert read_json(work / st / "manifest.json")["metrics"] == read_json(ref / st / "manifest.json")["metrics"], st
    assert_same_artefacts(ref, work, PER_IMAGE)


def test_sigkill_at_five_points_then_resume_gives_the_same_metrics(tmp_path):
    t0 = time.perf_counter()
    ref = tmp_path / "ref"
    reference = subprocess.Popen([sys.executable, "-m", "salmask", *_args(ref)], env=salmask_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # alongside
    try:
        survived = kill_sequence(tmp_path / "killed")
        _, err = reference.communicate(timeout=3600)
    finally:
        if reference.poll() is None:
            reference.kill()
    assert reference.returncode == 0, err[-3000:]
    print(f"\nkill points survived: {len(survived)} ({'; '.join(survived)}); {time.perf_counter() - t0:.0f}s")
    assert_same_run(ref, tmp_path / "killed")
