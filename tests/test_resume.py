"""Interruption and resume: killed runs restart where they stopped and end with an uninterrupted run's outputs."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from salmask.config import load_config
from salmask.io import read_json, save_npz, write_bytes_atomic
from salmask.pipeline import run_pipeline

from conftest import (REF_STAGES, assert_same_artefacts, assert_same_weights, run_salmask,
                      salmask_env, tiny_overrides)

# Runs the CLI with a fault: the (N+1)-th artefact written into folder KILL_DIR is half-written to its
# temporary file, then the process SIGKILLs itself — the state a kill in the middle of a write leaves.
KILL_MID_WRITE = """
import os, signal, sys
from pathlib import Path
import salmask.io as sio

target, after, seen = os.environ["KILL_DIR"], int(os.environ["KILL_AFTER"]), [0]
real = sio.write_bytes_atomic

def write(path, data):
    path = Path(path)
    if path.parent.name == target and path.suffix in (".npz", ".png", ".pt"):
        seen[0] += 1
        if seen[0] > after:
            fd, _ = sio._atomic_target(path)
            os.write(fd, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)

sio.write_bytes_atomic = write
from salmask.cli import main
sys.exit(main(sys.argv[1:]))
"""

TRAIN = ("cam.epochs=3", "cam.batch_size=4")  # 3 steps per epoch, a checkpoint after each epoch
TRAIN_STAGES = ("--stages", "generate,train_cam")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data) -> Path:
    """``model.pt`` of an uninterrupted run of the :data:`TRAIN` recipe."""
    work = tmp_path_factory.mktemp("train_ref")
    run_salmask(["run", "demo", *tiny_overrides(work, tiny_data, *TRAIN), *TRAIN_STAGES])
    return work / "train_cam" / "model.pt"


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}


@pytest.mark.slow
def test_kill_mid_stage_then_resume(tmp_path, tiny_data, reference_run):
    work = tmp_path / "work"
    args = ["run", "demo", *tiny_overrides(work, tiny_data), "--stages", ",".join(REF_STAGES)]
    killed = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, *args], capture_output=True, text=True,
                            env=salmask_env(KILL_DIR="make_cam", KILL_AFTER="5"), timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    cams = work / "make_cam"
    done = sorted(p.name for p in cams.glob("*.npz"))
    assert len(done) == 5 and len(list(cams.glob(".*.tmp"))) == 1
    assert not (cams / "manifest.json").exists() and (cams / "progress.json").exists()
    before = {n: t for n, t in _mtimes(cams).items() if n in done}
    time.sleep(0.05)  # so that a rewrite would show in the mtimes

    resumed = run_salmask(args)
    assert "5 of 12 images already done" in resumed.stderr
    assert "train_cam" in resumed.stderr and "done already" in resumed.stderr
    assert not list(work.rglob("*.tmp")), "leftover temporary files"
    assert {n: t for n, t in _mtimes(cams).items() if n in done} == before, "finished CAMs were rewritten"
    assert read_json(cams / "manifest.json")["images"] == 12
    assert_same_artefacts(reference_run, work)
    assert read_json(work / "eval_pseudo" / "manifest.json")["metrics"] == \
        read_json(reference_run / "eval_pseudo" / "manifest.json")["metrics"]


@pytest.mark.slow
def test_sigkill_during_training_resumes_to_the_same_weights(tmp_path, tiny_data, trained):
    work = tmp_path / "work"
    stages = TRAIN_STAGES

    args = [sys.executable, "-m", "salmask", "run", "demo", *tiny_overrides(work, tiny_data, *TRAIN), *stages]
    proc = subprocess.Popen(args, env=salmask_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = work / "train_cam" / "last.pt"
    try:
        deadline = time.time() + 240
        while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert ckpt.exists(), "the run ended before its first checkpoint"
    if (work / "train_cam" / "manifest.json").exists():
        pytest.fail("training finished before the kill; the test did not interrupt anything")
    assert not (work / "train_cam" / "model.pt").exists()

    resumed = run_salmask(["run", "demo", *tiny_overrides(work, tiny_data, *TRAIN), *stages])
    assert "resuming at step" in resumed.stderr
    history = read_json(work / "train_cam" / "history.json")
    assert [h["step"] for h in history] == list(range(1, 10))
    assert_same_weights(trained, work / "train_cam" / "model.pt")


@pytest.mark.slow
def test_kill_while_writing_a_checkpoint(tmp_path, tiny_data, trained):
    """A kill during the second checkpoint write resumes from the first (the partial file is ignored)."""
    work = tmp_path / "work"
    args = ["run", "demo", *tiny_overrides(work, tiny_data, *TRAIN), *TRAIN_STAGES]
    killed = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, *args], capture_output=True, text=True,
                            env=salmask_env(KILL_DIR="train_cam", KILL_AFTER="1"), timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert len(list((work / "train_cam").glob(".last.pt.*.tmp"))) == 1
    resumed = run_salmask(args)
    assert "resuming at step 3/9" in resumed.stderr
    assert not list(work.rglob("*.tmp"))
    assert_same_weights(trained, work / "train_cam" / "model.pt")


def _snapshot(work: Path) -> dict[str, int]:
    """mtime of every manifest and artefact under the work dir."""
    return {p.relative_to(work).as_posix(): p.stat().st_mtime_ns for p in work.rglob("*")
            if p.is_file() and p.suffix in (".json", ".npz", ".png", ".pt") and "labels" not in p.parts}


def test_skip_rerun_downstream_and_force(tmp_path, tiny_data, reference_run, one_thread):
    from salmask.cli import main

    work = tmp_path / "work"
    shutil.copytree(reference_run, work)
    ov = tiny_overrides(work, tiny_data)
    before = _snapshot(work)

    results = run_pipeline(load_config("demo", ov), stages=list(REF_STAGES))
    assert set(results) == set(REF_STAGES)
    assert _snapshot(work) == before, "a complete stage was rerun"

    (work / "make_pseudo" / "stale.png").write_bytes(b"left by another setting")
    time.sleep(0.05)
    run_pipeline(load_config("demo", [*ov, "walk.beta=4.0"]), stages=list(REF_STAGES))
    after = _snapshot(work)
    changed = {k.split("/")[0] for k in before if after.get(k) != before[k]}
    assert changed == {"make_pseudo", "eval_pseudo"}
    assert not (work / "make_pseudo" / "stale.png").exists()

    before = _snapshot(work)
    time.sleep(0.05)
    assert main(["run", "demo", *ov, "walk.beta=4.0", "--stages", "make_cam,eval_cam", "--force"]) == 0
    after = _snapshot(work)
    changed = {k.split("/")[0] for k in before if after.get(k) != before[k]}
    assert changed == {"make_cam", "eval_cam"}
    assert_same_artefacts(reference_run, work, ("make_cam",))


def test_missing_upstream_is_a_clear_error(tmp_path, tiny_data):
    from salmask.cli import main

    rc = main(["run", "demo", *tiny_overrides(tmp_path / "w", tiny_data), "--stages", "make_cam"])
    assert rc == 2


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    with pytest.raises(TypeError):
        write_bytes_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []

    write_bytes_atomic(target, b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(target, b"new content")
    with pytest.raises(OSError, match="disk full"):
        save_npz(tmp_path / "cam.npz", cam=np.ones((2, 3), np.float16))
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


class _NoisySet(torch.utils.data.Dataset):
    """Samples drawn from the global torch RNG, like the training sets' augmentations."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int):
        x = torch.randn(4) + i
        return x, x.sum(0, keepdim=True) * 0.1


def _fit(out: Path, crash_at: int | None = None, dropout: float = 0.0) -> dict:
    from salmask.utils.train import fit, make_loader

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = make_loader(_NoisySet(), 3, seed=0, num_workers=0)  # 3 steps per epoch

    def step(m, batch):
        if crash_at is not None and len(seen) == crash_at:
            raise RuntimeError("killed")
        seen.append(batch[0].sum().item())
        x, y = batch
        return ((m(x) - y) ** 2).mean(), {}

    seen: list[float] = []
    fit(model, loader, opt, total_steps=8, step_fn=step, device=torch.device("cpu"), out_dir=out,
        desc="toy", checkpoint_every=2)
    return {"weights": {k: v.clone() for k, v in model.state_dict().items()}, "batches": seen}


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_fit_resumes_mid_epoch_with_the_same_batches_and_weights(tmp_path, dropout):
    """With dropout too: the model's draws from the global RNG are restored after the loader's replay (a
    killed voc-real run resumed mid-epoch in train_seg, whose DeepLab-v3+ has dropout, ended elsewhere)."""
    whole = _fit(tmp_path / "a", dropout=dropout)
    with pytest.raises(RuntimeError, match="killed"):
        _fit(tmp_path / "b", crash_at=5, dropout=dropout)  # last checkpoint: step 4, mid second epoch
    resumed = _fit(tmp_path / "b", dropout=dropout)
    assert resumed["batches"] == whole["batches"][4:]
    for k, v in whole["weights"].items():
        assert torch.equal(v, resumed["weights"][k]), k
    assert [h["step"] for h in read_json(tmp_path / "b" / "history.json")] == list(range(1, 9))


def test_inference_settings_retrain_nothing(tmp_path):
    """Changing how DeepLab predicts reruns infer_seg and eval_seg; its weights' settings retrain it."""
    import salmask.stages  # noqa: F401  (registers the stages)
    from salmask.pipeline import STAGES, Context, planned_stages
    from salmask.seg.stage import INFER_KEYS, TRAIN_KEYS

    base = load_config("demo")
    assert set(base.seg) == {k.removeprefix("seg.") for k in TRAIN_KEYS + INFER_KEYS} | {"infer_batch",
                                                                                        "checkpoint_every"}

    def hashes(*overrides: str) -> dict[str, str]:
        ctx = Context(load_config("demo", list(overrides)), tmp_path)
        planned_stages(ctx, list(STAGES.values()), force=True)
        return ctx.hashes

    ref = hashes()
    for override, rerun in (("seg.scales=[0.5,1.0]", {"infer_seg", "eval_seg"}),
                            ("seg.fit_images=3", {"infer_seg", "eval_seg"}),
                            ("seg.checkpoint_every=7", set()),
                            ("seg.iterations=3", {"train_seg", "infer_seg", "eval_seg"}),
                            ("seg.source=pseudo", {"train_seg", "infer_seg", "eval_seg"})):
        changed = {name for name, h in hashes(override).items() if ref[name] != h}
        assert changed == rerun, override
