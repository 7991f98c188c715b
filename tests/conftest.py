"""Shared fixtures: a tiny synthetic pipeline (config, data, one reference run), subprocess helpers, voc-mini."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
VOC_MINI = ROOT.parent / "shared" / "data" / "voc-mini"

TINY = (
    "dataset.synthetic.n_train=12", "dataset.synthetic.n_val=6", "dataset.synthetic.n_sod=8",
    "dataset.synthetic.image_size=48", "cam.epochs=1", "cam.crop=48", "cam.resize_long=[40,56]",
    "cam.scales=[1.0]", "saliency.source=classic", "boundary.epochs=1", "boundary.crop=48",
    "seg.iterations=4", "seg.crop=48", "seg.scales=[1.0]", "select.sweep=false",
)
"""Overrides of the ``demo`` preset for a pipeline that runs in seconds on a CPU."""

REF_STAGES = ("generate", "train_cam", "make_cam", "eval_cam", "saliency", "make_boundary_labels",
              "train_boundary", "make_boundary", "make_pseudo", "eval_pseudo")
"""The stages of the reference run: two trainings and every per-image stage up to the pseudo masks."""

PER_IMAGE = ("make_cam", "saliency", "make_boundary_labels", "make_boundary", "make_pseudo")
"""Stages writing one artefact per image; their files must be byte-identical between equivalent runs."""


def tiny_overrides(work_dir: Path, data_root: Path, *extra: str) -> list[str]:
    return [f"work_dir={work_dir}", f"dataset.root={data_root}", *TINY, *extra]


def salmask_env(**extra: str) -> dict[str, str]:
    """Environment for a salmask subprocess: the source tree importable, one thread (reproducible floats)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_salmask(args: list[str], *, launcher: list[str] | None = None, timeout: float = 300,
                check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """``python -m salmask ARGS`` (or ``launcher + ['-m', 'salmask', *ARGS]``) in a fresh process."""
    cmd = [*(launcher or [sys.executable]), "-m", "salmask", *args]
    proc = subprocess.Popen(cmd, env=salmask_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank it started
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out after {timeout}s:\n{err[-4000:]}") from None
    res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stderr[-4000:]}")
    return res


def stage_files(stage_dir: Path) -> dict[str, bytes]:
    """The artefacts of a stage folder (name -> bytes), without bookkeeping (manifest, progress, logs)."""
    return {p.relative_to(stage_dir).as_posix(): p.read_bytes() for p in sorted(stage_dir.rglob("*"))
            if p.is_file() and p.suffix in (".npz", ".png")}


def assert_same_artefacts(a: Path, b: Path, stages: tuple[str, ...] = PER_IMAGE) -> None:
    for st in stages:
        fa, fb = stage_files(a / st), stage_files(b / st)
        assert fa, f"{a / st} holds no artefacts"
        assert sorted(fa) == sorted(fb), f"{st}: different file sets"
        differ = [n for n in fa if fa[n] != fb[n]]
        assert not differ, f"{st}: {len(differ)} files differ, e.g. {differ[:3]}"


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa = torch.load(a, map_location="cpu", weights_only=True)["model"]
    wb = torch.load(b, map_location="cpu", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{a} and {b} differ in {differ[:3]}"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The tiny synthetic dataset, generated once; runs that point ``dataset.root`` here reuse it as is."""
    from salmask.data.synthetic import generate

    root = tmp_path_factory.mktemp("tiny_data")
    generate(root, seed=0, image_size=48, n_train=12, n_val=6, n_sod=8)
    return root


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, tiny_data) -> Path:
    """An uninterrupted single-process run of :data:`REF_STAGES` (a subprocess); its work dir."""
    work = tmp_path_factory.mktemp("reference") / "work"
    run_salmask(["run", "demo", *tiny_overrides(work, tiny_data), "--stages", ",".join(REF_STAGES)])
    return work


@pytest.fixture
def one_thread():
    """In-process runs compared with subprocess ones use one thread, like them (same float results)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def voc_mini() -> Path:
    if not (VOC_MINI / "VOCdevkit" / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"voc-mini not found at {VOC_MINI}")
    return VOC_MINI


def gradient_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A small RGB uint8 [h,w,3] test picture."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
