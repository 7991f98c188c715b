"""A folder of the user's own photos: without ground-truth masks the evaluation stages are left out, not run
into a crash; asked for by name, pre-flight says what is missing."""
from __future__ import annotations

import numpy as np
import pytest

from salmask.config import load_config
from salmask.io import write_png
from salmask.pipeline import plan_problems, resolve_stages
from salmask.registry import STAGES, has_ground_truth

SCORING = {"eval_cam", "eval_pseudo", "eval_select", "eval_seg"}


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    for i in ("p1", "p2", "p3"):
        write_png(tmp_path / "photos" / f"{i}.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    (tmp_path / "labels.txt").write_text("p1 cat\np2 dog\np3 cat dog\n")
    return tmp_path


def folder_config(folder, *more):
    return load_config("demo", [f"work_dir={folder / 'w'}", "dataset.kind=folder", f"dataset.images={folder / 'photos'}",
                                f"dataset.labels={folder / 'labels.txt'}", "dataset.classes=[cat,dog]", *more])


def test_scoring_stages_are_the_ones_declaring_masks():
    assert {st.name for st in STAGES.values() if st.masks} == SCORING


def test_without_masks_the_evaluation_stages_are_left_out(folder):
    cfg = folder_config(folder)
    assert not has_ground_truth(cfg)
    planned = {st.name for st in resolve_stages(cfg, None)}
    assert not planned & SCORING and {"train_cam", "make_pseudo", "select", "train_seg", "infer_seg"} <= planned
    problems = plan_problems(cfg, ["eval_cam"])
    assert any(p.startswith("dataset.masks is not set: eval_cam score") for p in problems), problems
    with_masks = folder_config(folder, f"dataset.masks={folder / 'photos'}")
    assert SCORING <= {st.name for st in resolve_stages(with_masks, None)}
    assert not any("dataset.masks" in p for p in plan_problems(with_masks, ["eval_cam"]))


def test_the_run_says_what_it_left_out(folder, monkeypatch):
    from salmask import pipeline

    class Planned(Exception):
        pass

    def stop(*args):
        raise Planned

    monkeypatch.setattr(pipeline, "planned_stages", stop)  # the log line comes before the plan: stop there
    with pytest.raises(Planned):
        pipeline.run_pipeline(folder_config(folder))
    assert "eval_cam, eval_pseudo, eval_select, eval_seg left out: dataset.kind=folder without dataset.masks" \
        in (folder / "w" / "salmask.log").read_text()
