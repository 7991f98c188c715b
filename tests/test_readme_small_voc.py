"""The README's small-VOC command runs as written (fewer images), on a machine without internet."""
from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, VOC_MINI, salmask_env

MARKER = "<!-- small-voc-command -->"


def readme_command() -> list[str]:
    """The command of the first bash block after the README's marker: continuation lines joined, the comment
    dropped, split as a shell would."""
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "README lost the small-VOC command's marker"
    block = re.search(r"```bash\n(.*?)```", text.split(MARKER, 1)[1], re.S)
    assert block, "no bash block after the small-VOC command's marker"
    line = block.group(1).replace("\\\n", " ").strip()
    assert "\n" not in line, "the block should hold one command"
    return shlex.split(line, comments=True)


def test_the_command_is_a_salmask_run_without_hub_weights():
    from salmask.config import load_config

    words = readme_command()
    assert words[:2] == ["salmask", "run"], words
    cfg = load_config(words[2], [w for w in words[3:] if "=" in w])
    assert all(cfg[s].pretrained is False for s in ("cam", "boundary", "seg", "sod"))
    assert cfg.saliency.source == "classic" and cfg.num_workers == "auto"
    assert cfg.seg.iterations <= 100 and cfg.cam.epochs <= 10


@pytest.mark.slow
@pytest.mark.skipif(not (VOC_MINI / "VOCdevkit").is_dir(), reason="voc-mini is absent")
def test_readme_small_voc_command_runs_as_written(tmp_path):
    """The exact words of the README, from the repository root (its ``../shared/data/voc-mini`` resolves there),
    plus ``dataset.max_images=6`` and a temporary work dir; the hub unreachable, the caches empty."""
    words = readme_command()
    with socket.create_server(("127.0.0.1", 0)) as s:
        closed = s.getsockname()[1]
    work = tmp_path / "work"
    env = salmask_env(HF_ENDPOINT=f"http://127.0.0.1:{closed}", HF_HUB_CACHE=str(tmp_path / "hf"),
                      TORCH_HOME=str(tmp_path / "torch"))
    res = subprocess.run([sys.executable, "-m", "salmask", *words[1:], "dataset.max_images=6", f"work_dir={work}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-4000:]
    for st in ("train_cam", "make_cam", "eval_cam", "saliency", "make_boundary_labels", "train_boundary",
               "make_boundary", "make_pseudo", "eval_pseudo", "select", "eval_select", "train_seg", "infer_seg",
               "eval_seg"):
        assert (work / st / "manifest.json").is_file(), st
    assert "pseudo: SBE (classic MB+ saliency)" in res.stdout and "segmentation (val)" in res.stdout
    assert "worker processes in total" not in res.stderr  # num_workers: auto asks for no more than the machine has
