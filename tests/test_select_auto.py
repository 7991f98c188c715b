"""The Selector's label-free mode (``select.mode: auto``): a judge (boundary map or CAM classifier) decides
between the walk's mask and the saliency mask."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

import salmask
from salmask.errors import ArgumentError, ConfigError
from salmask.errors import InputError
from salmask.io import read_json, read_mask, save_npz, write_gray, write_png
from salmask.select.judge import (BoundaryJudge, ClassifierJudge, boundary_file, contour, contour_score,
                                  region_scores, upsample_boundary)
from salmask.select.sos import SelectorConfig, auto_replaces, select_folder
from tests.conftest import run_salmask, tiny_overrides


class RedDetector(nn.Module):
    """Logit of class k (1-based id k+1) = w_k · (mean of the red channel minus the others); a stand-in for a
    classifier that knows class 1 is red. Inputs are normalised images [B,3,H,W], as the judge feeds them."""

    def __init__(self, num_fg: int = 3):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(1.0, 0.2, num_fg), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = (x[:, 0] - 0.5 * (x[:, 1] + x[:, 2])).flatten(1).mean(1)
        return red[:, None] * self.w[None]


def red_scene(h: int = 32, w: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grey image with a red square (the object) and a blue strip (context); masks of both."""
    img = np.full((h, w, 3), 120, np.uint8)
    obj = np.zeros((h, w), bool)
    obj[8:24, 10:26] = True
    ctx = np.zeros((h, w), bool)
    ctx[26:, :] = True
    img[obj] = (220, 30, 30)
    img[ctx] = (30, 30, 220)
    return img, obj, ctx


def test_region_scores_are_keep_minus_remove():
    img, obj, ctx = red_scene()
    model = RedDetector()
    got = region_scores(model, img, 1, [obj, ctx])
    from salmask.data.transforms import to_tensor

    x = to_tensor(img)
    expect = []
    for m in (obj, ctx):
        mt = torch.from_numpy(m)
        keep, remove = model(torch.stack([x * mt, x * ~mt]))[:, 0]
        expect.append(float(keep - remove))
    np.testing.assert_allclose(got, expect, rtol=1e-6)
    assert got[0] > 0 > got[1]  # the object's mask keeps its evidence; the context's removes none of it


def test_judge_prefers_the_mask_on_the_object(tmp_path):
    img, obj, ctx = red_scene()
    write_png(tmp_path / "a.png", img)
    judge = ClassifierJudge(RedDetector(), lambda i: tmp_path / f"{i}.png")
    walk_on_context = obj[:] & False
    walk_on_context[20:, :] = True  # a walk that leaked into the context below the object
    w, s = judge("a", 1, walk_on_context, obj)
    assert s > w and auto_replaces((w, s))
    w, s = judge("a", 1, obj, ctx)  # the other way round: the walk holds the object, saliency the context
    assert w > s and not auto_replaces((w, s))
    assert not auto_replaces(None) and not auto_replaces((1.0, 1.0))  # ties keep the walk's mask


def _folders(tmp_path):
    """Three single-class images: ``good`` (the walk on context, saliency on the red object), ``bad`` (the walk on
    the object, saliency on context) and ``far`` (no overlap at all, saliency on the object); one multi-class."""
    img, obj, ctx = red_scene()
    d = {k: tmp_path / k for k in ("pseudo", "sal", "img", "gt", "out")}
    for p in d.values():
        p.mkdir()
    spill = np.zeros_like(obj)
    spill[20:, :] = True
    far = np.zeros_like(obj)
    far[0:4, 30:] = True
    cases = {"good": (spill, obj), "bad": (obj, ctx), "far": (far, obj)}
    for i, (walk, sal) in cases.items():
        write_png(d["pseudo"] / f"{i}.png", np.where(walk, 1, 0).astype(np.uint8))
        write_gray(d["sal"] / f"{i}.png", sal.astype(np.float32))
        write_png(d["img"] / f"{i}.png", img)
        write_png(d["gt"] / f"{i}.png", np.where(obj, 1, 0).astype(np.uint8))
    multi = np.where(obj, 1, np.where(ctx, 2, 0)).astype(np.uint8)
    write_png(d["pseudo"] / "multi.png", multi)
    write_png(d["img"] / "multi.png", img)
    write_png(d["gt"] / "multi.png", multi)
    return d


def test_auto_mode_replaces_where_the_judge_says(tmp_path):
    d = _folders(tmp_path)
    judge = ClassifierJudge(RedDetector(), lambda i: d["img"] / f"{i}.png")
    report = select_folder(d["pseudo"], d["sal"], d["out"], num_classes=4, config=SelectorConfig(mode="auto"),
                           gt_dir=d["gt"], judge=judge)
    # Algorithm 1 at t0 = 0.4 replaces none of them (overlaps 64/672, 0, 0); auto takes the object where it is
    assert report["replaced_ids"] == ["far", "good"]
    assert set(report["judged"]) == {"bad", "far", "good"}
    assert all(s > w for w, s in (report["judged"][i] for i in ("far", "good")))
    np.testing.assert_array_equal(read_mask(d["out"] / "good.png"), read_mask(d["gt"] / "good.png"))
    np.testing.assert_array_equal(read_mask(d["out"] / "bad.png"), read_mask(d["pseudo"] / "bad.png"))
    assert (d["out"] / "multi.png").read_bytes() == (d["pseudo"] / "multi.png").read_bytes()
    assert report["metrics"]["all"]["after"]["mIoU"] > report["metrics"]["all"]["before"]["mIoU"]
    sep = select_folder(d["pseudo"], d["sal"], tmp_path / "sep", num_classes=4, gt_dir=d["gt"])
    assert sep["replaced"] == 0 and "judged" not in sep
    json.dumps(report)  # JSON-ready

    with pytest.raises(ConfigError, match="needs a judge"):
        select_folder(d["pseudo"], d["sal"], tmp_path / "x", num_classes=4, config=SelectorConfig(mode="auto"))


def test_api_and_cli_auto_mode(tmp_path):
    from salmask.models.cam_net import CAMNet
    from salmask.utils.train import save_checkpoint

    d = _folders(tmp_path)
    torch.manual_seed(0)
    net = CAMNet(3, "resnet18").eval()
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, model=net.state_dict(), backbone="resnet18")
    report = salmask.select_masks(d["pseudo"], d["sal"], out=d["out"], num_classes=4, mode="auto",
                                  judge="classifier", images=d["img"], cam=ckpt)
    judge = ClassifierJudge(net, lambda i: d["img"] / f"{i}.png")
    expected = sorted(i for i in ("bad", "far", "good")
                      if auto_replaces(judge(i, 1, read_mask(d["pseudo"] / f"{i}.png") == 1,
                                             read_mask(d["sal"] / f"{i}.png") > 0)))
    assert report["replaced_ids"] == expected  # the checkpoint's network is the judge, whatever it decides

    ids = ["bad", "far", "good"]
    masks = [read_mask(d["pseudo"] / f"{i}.png") for i in ids]
    sals = [np.asarray(read_mask(d["sal"] / f"{i}.png"), np.float32) / 255 for i in ids]
    imgs = [salmask.read_image(d["img"] / f"{i}.png") for i in ids]
    selected, arr_report = salmask.select_masks(masks, sals, [[1]] * 3, num_classes=4, mode="auto",
                                                judge="classifier", images=imgs, cam=net)
    assert [ids[int(k)] for k in arr_report["replaced_ids"]] == expected
    for i, m in zip(ids, selected):
        np.testing.assert_array_equal(m, read_mask(d["out"] / f"{i}.png"))

    with pytest.raises(ArgumentError, match="needs images and cam"):
        salmask.select_masks(masks, sals, mode="auto", judge="classifier", num_classes=4)
    res = run_salmask(["select", "--pseudo", str(d["pseudo"]), "--saliency", str(d["sal"]), "--out",
                       str(tmp_path / "cli"), "--num-classes", "4", "--classes", "none", "--mode", "auto",
                       "--judge", "classifier", "--images", str(d["img"]), "--cam", str(ckpt)])
    assert read_json(tmp_path / "cli" / "report.json")["replaced_ids"] == expected, res.stdout
    res = run_salmask(["select", "--pseudo", str(d["pseudo"]), "--saliency", str(d["sal"]), "--out",
                       str(tmp_path / "cli2"), "--num-classes", "4", "--mode", "auto"], check=False)
    assert res.returncode != 0 and "--boundary" in res.stderr


def test_contour_and_boundary_judge(tmp_path):
    m = np.zeros((6, 7), bool)
    m[1:5, 1:6] = True
    inner = np.zeros_like(m)
    inner[2:4, 2:5] = True
    np.testing.assert_array_equal(contour(m), m & ~inner)
    full = np.zeros((4, 4), bool)
    full[:] = True
    ring = full.copy()
    ring[1:3, 1:3] = False
    np.testing.assert_array_equal(contour(full), ring)  # the image border counts as outside
    assert contour_score(np.ones((6, 7), np.float32), np.zeros((6, 7), bool)) == 0.0

    _, obj, ctx = red_scene()
    edge = np.zeros(obj.shape, np.float32)
    edge[contour(obj)] = 1.0  # a boundary map that fires on the object's outline
    spill = np.zeros_like(obj)
    spill[20:, :] = True
    judge = BoundaryJudge(lambda i: edge)
    w, s = judge("a", 1, spill, obj)
    assert s == 1.0 and w < 0.5 and auto_replaces((w, s))
    w, s = judge("a", 1, obj, ctx)
    assert w > s and not auto_replaces((w, s))
    stride4 = np.random.default_rng(0).random((8, 10)).astype(np.float32)  # [ceil(32/4), ceil(40/4)]
    up = upsample_boundary(stride4, (32, 40))
    assert up.shape == (32, 40) and up.min() >= stride4.min() - 1e-6 and up.max() <= stride4.max() + 1e-6

    save_npz(tmp_path / "a.npz", boundary=stride4.astype(np.float16))
    np.testing.assert_allclose(boundary_file(tmp_path)("a"), stride4, atol=1e-3)
    np.savez(tmp_path / "nan.npz", boundary=np.full((3, 3), np.nan, np.float32))  # save_npz refuses NaN
    save_npz(tmp_path / "wrong.npz", cam=np.zeros((3, 3), np.float32))
    for i, msg in (("nan", "finite"), ("wrong", "'boundary'"), ("gone", "not found")):
        with pytest.raises(InputError, match=msg) as e:
            boundary_file(tmp_path)(i)
        assert f"{i}.npz" in str(e.value)


def test_api_and_cli_boundary_judge(tmp_path):
    d = _folders(tmp_path)
    _, obj, _ = red_scene()
    edge = np.zeros(obj.shape, np.float32)
    edge[contour(obj)] = 1.0
    (tmp_path / "bd").mkdir()
    for i in ("good", "bad", "far"):
        save_npz(tmp_path / "bd" / f"{i}.npz", boundary=edge)
    report = salmask.select_masks(d["pseudo"], d["sal"], out=d["out"], num_classes=4, mode="auto",
                                  boundary=tmp_path / "bd", gt=d["gt"])
    assert report["replaced_ids"] == ["far", "good"]  # the saliency mask traces the object's outline there
    ids = ["bad", "far", "good"]
    masks = [read_mask(d["pseudo"] / f"{i}.png") for i in ids]
    sals = [np.asarray(read_mask(d["sal"] / f"{i}.png"), np.float32) / 255 for i in ids]
    selected, arr_report = salmask.select_masks(masks, sals, [[1]] * 3, num_classes=4, mode="auto",
                                                boundary=[edge] * 3)
    assert arr_report["replaced_ids"] == ["000001", "000002"]
    for i, m in zip(ids, selected):
        np.testing.assert_array_equal(m, read_mask(d["out"] / f"{i}.png"))
    with pytest.raises(ArgumentError, match="needs boundary"):
        salmask.select_masks(masks, sals, mode="auto", num_classes=4)
    with pytest.raises(ArgumentError, match=r"\[0, 1\]"):
        salmask.select_masks(masks, sals, mode="auto", num_classes=4, boundary=[edge * 3] * 3)
    run_salmask(["select", "--pseudo", str(d["pseudo"]), "--saliency", str(d["sal"]), "--out",
                 str(tmp_path / "cli"), "--num-classes", "4", "--classes", "none", "--mode", "auto",
                 "--boundary", str(tmp_path / "bd")])
    assert read_json(tmp_path / "cli" / "report.json")["replaced_ids"] == ["far", "good"]


@pytest.mark.parametrize("judge", ["boundary", "classifier"])
def test_pipeline_select_auto(tmp_path, reference_run, tiny_data, judge):
    work = tmp_path / "work"
    shutil.copytree(reference_run, work, symlinks=True)
    run_salmask(["run", "demo", *tiny_overrides(work, tiny_data, "select.mode=auto", f"select.judge={judge}",
                                                   "select.sweep=true"),
                 "--stages", "select,eval_select"])
    report = read_json(work / "select" / "report.json")
    assert report["mode"] == "auto" and report["judged"]
    assert report["replaced"] == sum(s > w for w, s in report["judged"].values())
    assert set(report["replaced_ids"]) <= set(report["judged"])
    ev = read_json(work / "eval_select" / "manifest.json")
    rows = read_json(work / "eval_select" / "sweep.json")
    cmp = ev["auto_vs_sweep"]
    assert cmp["auto_mIoU"] == ev["metrics"]["mIoU"]
    assert cmp["best_mIoU"] == max(r["all"]["mIoU"] for r in rows)
    assert cmp["below_best"] == round(cmp["best_mIoU"] - cmp["auto_mIoU"], 3)
    from salmask.report.html import write_report

    assert "auto: no threshold, judged per image" in write_report(work).read_text()


def test_preflight_names_a_judge_without_its_evidence(tmp_path):
    from salmask.config import load_config
    from salmask.preflight import check_plan

    cfg = load_config("voc_cpu", [f"work_dir={tmp_path}", "walk.boundary=saliency"])
    assert cfg.select.mode == "auto"
    problems = check_plan(cfg, ["select"], tmp_path)
    assert any("select.judge=boundary" in p and "walk.boundary=saliency" in p for p in problems), problems
    cfg = load_config("voc_cpu", [f"work_dir={tmp_path}", "walk.boundary=saliency", "select.judge=classifier"])
    assert not any("select.judge" in p for p in check_plan(cfg, ["select"], tmp_path))
    with pytest.raises(ConfigError, match="select.judge.*one of boundary, classifier, got 'oracle'"):
        load_config("voc_cpu", [f"work_dir={tmp_path}", "select.judge=oracle"])  # the config's type check
