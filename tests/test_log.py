"""Progress reporting: a tqdm bar on a terminal, plain log lines (rate, time left, no '\\r') elsewhere."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from salmask.utils.log import LogProgress, progress, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_progress_lines_every_few_percent_with_rate_and_eta():
    clock, lines = FakeClock(), []
    bar = LogProgress(desc="make_cam", total=200, unit="img", emit=lines.append, clock=clock)
    for _ in range(200):
        clock.now += 0.5  # 2 img/s: 10% (20 images) every 10 s
        bar.update(1)
    bar.close()
    assert len(lines) == 10  # 10%, 20%, ... 100%
    assert lines[0] == "make_cam: 20/200 img (10%), 2 img/s, 1:30 left"
    assert lines[-1] == "make_cam: 200/200 img (100%), 2 img/s, 0:00 left"


def test_log_progress_spaces_lines_and_reports_slow_rates_and_postfix():
    clock, lines = FakeClock(), []
    bar = LogProgress(desc="train_seg", total=1000, initial=500, unit="step", emit=lines.append, clock=clock)
    bar.set_postfix(loss="0.1234", refresh=False)
    for _ in range(20):
        clock.now += 4.0  # 0.25 step/s: 1 % takes 40 s, so the 60 s rule decides
        bar.update(1)
    assert len(lines) == 1
    assert lines[0] == "train_seg: 515/1000 step (52%), 4 s/step, 32:20 left, loss=0.1234"
    fast = LogProgress(desc="quick", total=10, emit=lines.append, clock=clock)
    for _ in range(10):
        clock.now += 0.1
        fast.update(1)
    assert len(lines) == 1  # a stage done within LOG_MIN_S says nothing until its summary


def test_log_progress_wraps_iterables_and_unknown_totals():
    clock, lines = FakeClock(), []
    out = []
    for x in LogProgress(iter(range(3)), desc="scan", emit=lines.append, clock=clock):
        clock.now += 70.0
        out.append(x)
    assert out == [0, 1, 2]
    assert lines[0] == "scan: 1 img, 70 s/img" and len(lines) == 3


def test_bar_on_a_terminal_lines_elsewhere():
    assert isinstance(progress_bar("x", total=3, stream=io.StringIO()), LogProgress)
    assert isinstance(progress(range(3), "x", stream=io.StringIO()), LogProgress)
    terminal = Terminal()
    bar = progress_bar("x", total=3, stream=terminal)
    assert isinstance(bar, tqdm) and not bar.disable
    bar.update(3)
    bar.close()
    assert "\r" in terminal.getvalue()
    assert progress_bar("x", total=3, enabled=False, stream=terminal).disable


@pytest.mark.slow
def test_run_redirected_to_a_file_has_no_carriage_returns(tmp_path: Path):
    """A real (tiny) run with stderr in a file: its stage summaries, no bar frames."""
    work = tmp_path / "w"
    err = tmp_path / "err.log"
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "salmask", "run", "demo", f"work_dir={work}", f"dataset.root={work / 'data'}",
            "dataset.synthetic.image_size=48", "dataset.synthetic.n_train=16", "dataset.synthetic.n_val=6",
            "dataset.synthetic.n_sod=8", "cam.epochs=1", "cam.crop=48", "cam.resize_long=[40,56]",
            "cam.batch_size=8", "cam.scales=[1.0]", "--stages", "generate,train_cam,make_cam"]
    with open(err, "w") as f:
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=f, env=env, check=True, timeout=600)
    text = err.read_text()
    assert "\r" not in text
    for name in ("generate", "train_cam", "make_cam"):
        assert any(line.split()[2:4] == [name, "finished"] for line in text.splitlines()), text
