"""`salmask select` as a standalone tool on a mask folder it did not produce (voc-mini GT, eroded)."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from salmask.cli import main
from salmask.io import read_mask, write_gray, write_png
from salmask.metrics.confusion import score_folders

VOC_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc-mini"
GT = VOC_MINI / "VOCdevkit/VOC2012/SegmentationClassAug"


@pytest.mark.skipif(not VOC_MINI.is_dir(), reason="voc-mini is absent")
def test_select_cli_on_eroded_ground_truth(tmp_path):
    pseudo, sal, out = tmp_path / "pseudo", tmp_path / "sal", tmp_path / "out"
    ids = sorted(p.stem for p in GT.glob("*.png"))
    for i in ids:  # another "method": objects eroded by 9 px; saliency: the true foreground, a bit blurred
        gt = read_mask(GT / f"{i}.png")
        lab = np.where(gt == 255, 0, gt).astype(np.uint8)
        eroded = np.zeros_like(lab)
        for c in np.unique(lab[lab > 0]):
            eroded[cv2.erode((lab == c).astype(np.uint8), np.ones((19, 19), np.uint8)) > 0] = c
        write_png(pseudo / f"{i}.png", eroded)
        write_gray(sal / f"{i}.png", cv2.GaussianBlur((gt > 0).astype(np.float32), (5, 5), 0))
    assert main(["select", "--pseudo", str(pseudo), "--saliency", str(sal), "--out", str(out),
                 "--gt", str(GT), "--sweep"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert sorted(p.stem for p in out.glob("*.png")) == ids  # every mask kept, multi-class copied
    assert report["replaced"] > 0
    before = score_folders(pseudo, GT, 21)["mIoU"]
    after = score_folders(out, GT, 21)["mIoU"]
    assert after > before
    assert report["metrics"]["all"]["after"]["mIoU"] == pytest.approx(after)
    assert (tmp_path / "out_sweep.png").stat().st_size > 0
    never = tmp_path / "never"
    assert main(["select", "--pseudo", str(pseudo), "--saliency", str(sal), "--out", str(never),
                 "--t0", "1", "--t1", "0"]) == 0
    for i in ids:
        assert np.array_equal(read_mask(never / f"{i}.png"), read_mask(pseudo / f"{i}.png"))
