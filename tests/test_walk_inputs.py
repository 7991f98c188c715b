"""What feeds the walk and how its output is cut (issue 21): the trainers' momentum, the background score
chosen without ground truth, and saliency edges as boundary evidence."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from salmask.config import load_config
from salmask.errors import ConfigError
from salmask.io import read_json
from salmask.pipeline import Context, run_pipeline
from salmask.refine.bg_score import GRID, SaliencyAgreement, choose
from salmask.refine.edges import saliency_edges, walk_boundary

from conftest import tiny_overrides


def two_step_fit(momentum: float, seen: dict):
    """A stand-in for ``utils.train.fit``: two SGD steps on the trainer's own model, batch, loss and optimizer,
    each parameter's second update checked against SGD's formula with the configured momentum m:
    b1 = g1 + wd·p0; b2 = m·b1 + g2 + wd·p1; p2 = p1 − lr·b2."""

    def fit(model, loader, optimizer, *, step_fn, **_):
        batch = next(iter(loader))
        model.train()
        params = [(p, g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]]
        snapshots = []
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            loss, _ = step_fn(model, batch)
            loss.backward()
            snapshots.append([(p.detach().clone(), None if p.grad is None else p.grad.clone()) for p, _, _ in params])
            optimizer.step()
        checked = 0
        for k, (p, lr, wd) in enumerate(params):
            (p0, g1), (p1, g2) = snapshots[0][k], snapshots[1][k]
            if g1 is None or g2 is None:
                continue
            b2 = momentum * (g1 + wd * p0) + g2 + wd * p1
            torch.testing.assert_close(p.detach(), p1 - lr * b2, rtol=1e-5, atol=1e-7)
            checked += 1
        seen["checked"] = checked
        seen["momentum"] = {g["momentum"] for g in optimizer.param_groups}
        return []

    return fit


@pytest.mark.parametrize("momentum", [1e-4, 0.9])
def test_cam_and_boundary_trainers_use_the_configured_momentum(momentum, reference_run, tiny_data, tmp_path,
                                                              monkeypatch):
    import salmask.boundary.train as boundary_train
    import salmask.cam.train as cam_train

    cfg = load_config("demo", [*tiny_overrides(tmp_path, tiny_data), f"cam.momentum={momentum}",
                               f"boundary.momentum={momentum}"])
    ctx = Context(cfg, tmp_path)
    seen: dict = {}
    monkeypatch.setattr(cam_train, "fit", two_step_fit(momentum, seen))
    cam_train.train_cam(ctx.split("train_split"), cfg.cam, device=torch.device("cpu"), out_dir=tmp_path / "cam",
                        amp=False, num_workers=0, seed=0)
    assert seen["momentum"] == {momentum} and seen["checked"] > 0

    seen.clear()
    monkeypatch.setattr(boundary_train, "fit", two_step_fit(momentum, seen))
    train = ctx.split("train_split", need_labels=False)
    boundary_train.train_boundary(train.ids, train.image_path, reference_run / "make_boundary_labels",
                                  reference_run / "saliency", cfg.boundary,
                                  cam_checkpoint=reference_run / "train_cam" / "model.pt",
                                  device=torch.device("cpu"), out_dir=tmp_path / "boundary", amp=False,
                                  num_workers=0, seed=0)
    assert seen["momentum"] == {momentum} and seen["checked"] > 0


def test_reference_presets_keep_the_references_recipe():
    for preset in ("voc", "voc_v3plus", "coco"):
        cfg = load_config(preset)
        assert cfg.cam.momentum == 1e-4 and cfg.boundary.momentum == 1e-4, preset
        assert cfg.walk.bg_score == 0.21 and cfg.walk.boundary == "learned", preset
        assert cfg.amp is False, preset  # fp32, as the references; bf16 is the option amp=true
    assert load_config("demo").walk.bg_score == "auto"
    assert load_config("demo").amp is True and load_config("voc_cpu").amp is True
    assert load_config("voc", ["amp=true"]).amp is True


def test_agreement_picks_the_score_where_the_foreground_is_the_salient_region():
    rng = np.random.default_rng(0)
    agreement = SaliencyAgreement()
    for _ in range(5):
        scores = rng.random((2, 30, 40)).astype(np.float32)
        saliency = (scores.max(0) > 0.37).astype(np.float32)  # the foreground at 0.37, exactly
        agreement.update(scores, saliency)
    score, curve = choose(agreement)
    assert score == 0.37
    ious = {c["score"]: c["iou"] for c in curve}
    assert ious[0.37] == 100.0 and ious[0.36] < 100.0 and ious[0.38] < 100.0
    assert [c["score"] for c in curve] == list(GRID)


def test_agreement_curve_matches_a_direct_count():
    rng = np.random.default_rng(1)
    agreement = SaliencyAgreement()
    pairs = [(rng.random((k, 9, 11)).astype(np.float32), rng.random((9, 11)).astype(np.float32)) for k in (1, 3, 0)]
    for s, sal in pairs:
        agreement.update(s, sal)
    for c in agreement.curve()[::10]:
        inter = union = 0
        for s, sal in pairs:
            if len(s) == 0:
                continue
            fg, salient = s.max(0) > c["score"], sal > 0.5
            inter += (fg & salient).sum()
            union += (fg | salient).sum()
        assert c["iou"] == pytest.approx(100 * inter / union, abs=1e-3)


def test_saliency_edges_outline_the_salient_object():
    sal = np.zeros((64, 64), np.float32)
    sal[16:48, 16:48] = 1
    edges = saliency_edges(sal, (16, 16))
    assert edges.shape == (16, 16) and edges.dtype == np.float32
    assert edges[8, 8] == 0 and edges[0, 0] == 0  # inside the object, and in the flat background
    assert edges[4, 8] == 1 and edges[8, 3] == 1  # on the outline (grid cells 4 and 11/12)
    assert 0 <= edges.min() and edges.max() <= 1


def test_walk_boundary_sources():
    learned = np.full((4, 5), 0.3, np.float32)
    sal = np.zeros((16, 20), np.float32)
    sal[:, 10:] = 1
    edges = saliency_edges(sal, (4, 5))
    np.testing.assert_array_equal(walk_boundary("learned", learned, None, (4, 5)), learned)
    np.testing.assert_array_equal(walk_boundary("saliency", None, sal, (4, 5)), edges)
    np.testing.assert_array_equal(walk_boundary("both", learned, sal, (4, 5)), np.maximum(learned, edges))
    with pytest.raises(ConfigError, match="walk.boundary"):
        walk_boundary("edges", learned, sal, (4, 5))


def test_bg_score_accepts_auto_or_a_number():
    assert load_config("demo", ["walk.bg_score=auto"]).walk.bg_score == "auto"
    assert load_config("demo", ["walk.bg_score=0.3"]).walk.bg_score == 0.3
    with pytest.raises(ConfigError, match="walk.bg_score"):
        load_config("demo", ["walk.bg_score=high"])


def test_auto_bg_score_reads_no_ground_truth(reference_run, tiny_data, tmp_path):
    """make_pseudo with ``walk.bg_score=auto`` and ``walk.boundary=both`` on a copy of the reference run while
    the dataset's masks are absent: it runs, records its choice and curve, and writes every mask."""
    assert "bg_score_auto" in read_json(reference_run / "make_pseudo" / "manifest.json")  # the demo's default
    work = tmp_path / "work"
    shutil.copytree(reference_run, work, symlinks=True)
    cfg = load_config(str(reference_run / "config.yaml"), [f"work_dir={work}", "walk.bg_score=auto",
                                                           "walk.boundary=both"])
    masks = next(tiny_data.rglob("SegmentationClassAug"))
    hidden = masks.with_name("hidden-masks")
    masks.rename(hidden)
    try:
        result = run_pipeline(cfg, stages=["make_pseudo"])["make_pseudo"]
    finally:
        hidden.rename(masks)
    assert result["bg_score"] in GRID and result["boundary"] == "both"
    curve = result["bg_score_auto"]["curve"]
    assert max(curve, key=lambda c: c["iou"])["score"] == result["bg_score"]
    assert len(list((work / "make_pseudo").glob("*.png"))) == result["images"]


def test_one_pass_threshold_sweep_equals_scoring_each_threshold():
    """The histogram sweep against a direct cut at each threshold (argmax over [t, scores], ties to background)."""
    from salmask.cam.evaluate import ThresholdSweep
    from salmask.metrics.confusion import ConfusionMatrix

    rng = np.random.default_rng(0)
    thresholds = [0.3, 0.05, 0.21, 0.5, 0.21]
    sweep, direct = ThresholdSweep(thresholds, 21), [ConfusionMatrix(21) for _ in thresholds]
    for _ in range(20):
        keys = np.sort(rng.choice(np.arange(1, 21), rng.integers(0, 4), replace=False))
        scores = rng.random((len(keys), 17, 13)).astype(np.float16).astype(np.float32)
        scores[:, :3] = 0.21  # ties with a threshold
        gt = rng.integers(0, 21, (17, 13))
        gt[0, :4] = 255
        sweep.update(scores, keys, gt)
        for t, cm in zip(thresholds, direct):
            stack = np.concatenate([np.full((1, 17, 13), t, np.float32), scores])
            cm.update(np.concatenate([[0], keys])[stack.argmax(0)], gt)
    for a, b in zip(sweep.cms, direct):
        np.testing.assert_array_equal(a.hist, b.hist)
