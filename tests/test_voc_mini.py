"""The VOC presets end to end on ../shared/data/voc-mini (49 real VOC images; skipped when absent).

Same pipeline, same stage code as on VOC; only the sizes shrink (a few images, ResNet-18 from scratch,
one scale) so that it runs in about a minute on a CPU.
"""
from pathlib import Path

import numpy as np
import pytest

from salmask.config import load_config
from salmask.io import read_mask
from salmask.pipeline import run_pipeline

from test_pipeline import _expected

VOC_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc-mini"
pytestmark = pytest.mark.skipif(not VOC_MINI.is_dir(), reason="voc-mini is absent")

SMALL = [
    "dataset.eval_split=train_aug", "dataset.max_images=6", "num_workers=0",
    "cam.backbone=resnet18", "cam.pretrained=false", "cam.epochs=1", "cam.batch_size=3", "cam.crop=128",
    "cam.resize_long=[112,160]", "cam.scales=[1.0]",
    "saliency.source=classic",
    "boundary.backbone=resnet18", "boundary.init=cam", "boundary.epochs=1", "boundary.batch_size=3",
    "boundary.crop=128",
    "seg.backbone=resnet18", "seg.pretrained=false", "seg.batch_size=2", "seg.crop=128", "seg.iterations=2",
    "seg.scales=[1.0]", "select.sweep=true",
]


@pytest.mark.slow
def test_voc_preset_end_to_end(tmp_path):
    cfg = load_config("voc", [f"work_dir={tmp_path}", f"dataset.root={VOC_MINI}", *SMALL])
    results = run_pipeline(cfg)
    for st in ("train_cam", "make_cam", "eval_cam", "saliency", "make_boundary_labels", "train_boundary",
               "make_boundary", "make_pseudo", "eval_pseudo", "select", "eval_select", "train_seg",
               "infer_seg", "eval_seg"):
        assert (tmp_path / st / "manifest.json").is_file(), st
    ids = sorted(p.stem for p in (tmp_path / "make_pseudo").glob("*.png"))
    assert len(ids) == 6
    gt = VOC_MINI / "VOCdevkit/VOC2012/SegmentationClassAug"
    for i in ids:  # real image sizes all the way through
        assert read_mask(tmp_path / "make_pseudo" / f"{i}.png").shape == read_mask(gt / f"{i}.png").shape
        assert read_mask(tmp_path / "select" / "masks" / f"{i}.png").shape == read_mask(gt / f"{i}.png").shape
    for key in ("eval_cam", "eval_pseudo", "eval_select", "eval_seg"):
        m = results[key]["metrics"]
        assert 0.0 <= m["mIoU"] <= 100.0 and np.isfinite(m["mIoU"])
    assert "single_class" in results["eval_pseudo"]["metrics"]
    assert (tmp_path / "eval_select" / "sweep.png").is_file()
    # the fit: DeepLab's predictions on its training images against the masks it learned and against their GT
    fit = results["eval_seg"]["metrics"]["fit"]
    preds = {i: read_mask(tmp_path / "infer_seg" / "train" / f"{i}.png") for i in ids}
    assert fit["images"] == 6
    masks = {i: read_mask(tmp_path / "select" / "masks" / f"{i}.png") for i in ids}
    assert fit["agreement"] == pytest.approx(_expected(preds, masks)["mIoU"], abs=1e-6)
    assert fit["gt"] == pytest.approx(_expected(preds, {i: read_mask(gt / f"{i}.png") for i in ids})["mIoU"],
                                      abs=1e-6)
    # a rerun skips every finished stage
    again = run_pipeline(cfg)
    assert again["eval_seg"]["hash"] == results["eval_seg"]["hash"]


@pytest.mark.slow
def test_v3plus_preset_trains_a_few_steps(tmp_path):
    masks = VOC_MINI / "VOCdevkit/VOC2012/SegmentationClassAug"
    cfg = load_config("voc_v3plus", [f"work_dir={tmp_path}", f"dataset.root={VOC_MINI}", *SMALL,
                                     "seg.backbone=resnest50", f"seg.source={masks}", "seg.iterations=3"])
    assert cfg.seg.arch == "deeplabv3plus"
    results = run_pipeline(cfg, stages=["train_seg", "infer_seg", "eval_seg"])
    assert results["train_seg"]["steps"] == 3
    assert len(list((tmp_path / "infer_seg" / "val").glob("*.png"))) == 6
