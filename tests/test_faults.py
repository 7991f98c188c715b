"""Writes that fail part-way (file size limit, full disk, read-only folder): no half-written artefact is left
for a later run to trust, the error says what to free or fix, and the rerun ends as an uninterrupted run."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salmask.io import read_json, save_npz, write_bytes_atomic
from salmask.errors import OutputError

from conftest import REF_STAGES, assert_same_artefacts, run_salmask, salmask_env, tiny_overrides

resource = pytest.importorskip("resource")

UNDER_LIMIT = """
import resource, signal, sys
import numpy as np
from salmask.errors import OutputError
from salmask.io import save_npz
from salmask.utils.train import save_checkpoint
import torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
for what, write in (("npz", lambda: save_npz(sys.argv[1], x=np.random.rand(100, 100))),
                    ("checkpoint", lambda: save_checkpoint(__import__("pathlib").Path(sys.argv[2]),
                                                           model={"w": torch.rand(100, 100)}))):
    try:
        write()
    except OutputError as e:
        print(what, e)
    else:
        print(what, "written")
"""


def test_file_size_limit_keeps_the_old_artefact_and_says_what_to_fix(tmp_path):
    old_npz, old_pt = tmp_path / "cam.npz", tmp_path / "last.pt"
    save_npz(old_npz, x=np.zeros(3))
    write_bytes_atomic(old_pt, b"old checkpoint")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    res = subprocess.run([sys.executable, "-c", UNDER_LIMIT, str(old_npz), str(old_pt)], env=salmask_env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["npz", "checkpoint"], res.stdout
    for line, path in zip(lines, (old_npz, old_pt)):
        assert str(path) in line and "ulimit -f" in line and "Nothing half-written" in line, line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no .tmp, old files intact


@pytest.mark.slow
def test_cli_over_the_file_size_limit_is_one_clear_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(images / "a.png")
    out = tmp_path / "out"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8_000, 8_000))

    res = subprocess.run([sys.executable, "-m", "salmask", "saliency", "--source", "classic", "--images", str(images),
                          "--out", str(out)], env=salmask_env(), capture_output=True, text=True, timeout=300,
                         preexec_fn=limit)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-2000:]
    assert err[-1].startswith(f"salmask: error: {out / 'a.png'}: cannot write") and "ulimit -f" in err[-1]
    assert "Traceback" not in res.stderr
    assert list(out.iterdir()) == []


def test_read_only_folder(tmp_path, monkeypatch):
    import errno
    import os

    target = tmp_path / "ro" / "x.npz"
    target.parent.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("salmask.io.tempfile.mkstemp", refuse)  # as root, chmod alone would not stop a write
    with pytest.raises(OutputError, match="not writable: fix its permissions or choose another work_dir"):
        save_npz(target, x=np.zeros(2))
    monkeypatch.undo()
    assert list(target.parent.iterdir()) == []
    if os.geteuid() != 0:
        target.parent.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="not writable"):
                save_npz(target, x=np.zeros(2))
        finally:
            target.parent.chmod(0o700)


# The disk fills up during make_cam: after AFTER artefacts, every fsync of a new one fails with ENOSPC.
DISK_FULL = """
import errno, os, sys
target, after, seen = os.environ["FULL_DIR"], int(os.environ["FULL_AFTER"]), [0]
real = os.fsync

def fsync(fd):
    path = os.readlink(f"/proc/self/fd/{fd}")
    if f"/{target}/" in path and path.endswith(".tmp") and ".npz." in path:
        seen[0] += 1
        if seen[0] > after:
            raise OSError(errno.ENOSPC, "No space left on device")
    real(fd)

os.fsync = fsync
from salmask.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_disk_full_mid_stage_then_rerun(tmp_path, tiny_data, reference_run):
    work = tmp_path / "work"
    args = ["run", "demo", *tiny_overrides(work, tiny_data), "--stages", ",".join(REF_STAGES)]
    full = subprocess.run([sys.executable, "-c", DISK_FULL, *args], capture_output=True, text=True, timeout=600,
                          env=salmask_env(FULL_DIR="make_cam", FULL_AFTER="4"))
    assert full.returncode == 2, full.stderr[-3000:]
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("salmask: error: ") and "/make_cam/" in last and "is full" in last
    assert "free space there or choose another work_dir" in last and "Traceback" not in full.stderr
    cams = work / "make_cam"
    assert len(list(cams.glob("*.npz"))) == 4 and not list(cams.glob(".*.tmp"))
    assert not (cams / "manifest.json").exists()

    resumed = run_salmask(args)
    assert "4 of 12 images already done" in resumed.stderr
    assert_same_artefacts(reference_run, work)
    assert read_json(work / "eval_pseudo" / "manifest.json")["metrics"] == \
        read_json(reference_run / "eval_pseudo" / "manifest.json")["metrics"]
