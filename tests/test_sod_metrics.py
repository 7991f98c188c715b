"""SOD metrics over pysodmetrics: perfect / inverted / hand-computed cases, errors, folder scoring."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from salmask.errors import InputError
from salmask.io import write_gray, write_png
from salmask.metrics.sod import SODMetrics, read_sod_mask, score_sod_folders

KEYS = ("MAE", "maxF", "meanF", "adpF", "Sm", "Em")


def _square_gt(h: int = 24, w: int = 32) -> np.ndarray:
    gt = np.zeros((h, w), bool)
    gt[6:18, 8:24] = True
    return gt


def test_perfect_prediction_scores_one():
    gt = _square_gt()
    m = SODMetrics()
    m.update(gt.astype(np.float32), gt)
    r = m.results()
    assert set(KEYS) <= set(r) and r["images"] == 1
    assert r["MAE"] == 0.0
    for k in ("maxF", "adpF", "Sm"):
        assert r[k] == pytest.approx(1.0, abs=1e-6), k
    # E-measure divides by H*W - 1 like the MATLAB reference, so a perfect map scores N/(N-1).
    n = gt.size
    assert r["maxEm"] == pytest.approx(n / (n - 1)) and r["adpEm"] == pytest.approx(n / (n - 1))
    # Mean over the 256 thresholds includes ">= 0", where everything is foreground.
    assert r["meanF"] > 0.99 and r["Em"] > 0.99
    assert all(isinstance(r[k], float) for k in KEYS)


def test_inverted_prediction_scores_low():
    gt = _square_gt()
    m = SODMetrics()
    m.update((~gt).astype(np.float32), gt)
    r = m.results()
    assert r["MAE"] == pytest.approx(1.0)
    assert r["adpF"] == 0.0 and r["Sm"] < 0.1 and r["Em"] < 0.3
    assert r["maxF"] < 0.5  # only the trivial all-foreground threshold has any recall


def test_mae_matches_hand_computation():
    gt = np.repeat(np.repeat(np.array([[0, 0], [1, 1]], np.uint8), 4, 0), 4, 1)
    pred = np.repeat(np.repeat(np.array([[0, 51], [255, 204]], np.uint8), 4, 0), 4, 1)
    m = SODMetrics()
    m.update(pred, gt)  # min-max normalised to 0, .2 / 1, .8 per 4x4 block
    assert m.results()["MAE"] == pytest.approx((0 + 0.2 + 0 + 0.2) / 4)
    pred2 = gt.astype(np.float32)
    pred2[0, 0] = 1.0  # one wrong pixel of 64
    m.update(pred2, gt * 255)  # 0/255 masks are read the same as 0/1 masks
    assert m.results()["MAE"] == pytest.approx((0.1 + 1 / 64) / 2)
    assert m.results()["images"] == 2


def test_float_and_uint8_predictions_agree():
    rng = np.random.default_rng(0)
    pred = rng.random((20, 30)).astype(np.float32)
    gt = _square_gt(20, 30)
    a, b = SODMetrics(), SODMetrics()
    a.update(pred, gt)
    b.update(np.round(pred * 255).astype(np.uint8), gt)
    assert a.results() == b.results()


def test_errors():
    m = SODMetrics()
    with pytest.raises(ValueError, match="no images"):
        m.results()
    with pytest.raises(InputError, match=r"32x24.*40x24|40x24.*32x24"):
        m.update(np.zeros((24, 40), np.float32), _square_gt())
    with pytest.raises(InputError, match="NaN"):
        m.update(np.full((24, 32), np.nan, np.float32), _square_gt())
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        m.update(np.full((24, 32), 2.0, np.float32), _square_gt())
    with pytest.raises(InputError, match="S-measure is undefined"):
        m.update(np.array([[0.2, 0.9], [0.4, 0.1]], np.float32), np.array([[0, 0], [1, 1]], bool))
    assert m.count == 0
    m.update(_square_gt().astype(np.float32), _square_gt())  # the failed images left no trace
    assert m.results()["Sm"] == pytest.approx(1.0) and m.results()["images"] == 1


def test_score_folders(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    gt = _square_gt()
    for i, shift in (("a", 0), ("b", 2)):
        write_png(gt_dir / f"{i}.png", gt.astype(np.uint8) * 255)
        write_gray(pred_dir / f"{i}.png", np.roll(gt, shift, axis=1).astype(np.float32))
    r = score_sod_folders(pred_dir, gt_dir)
    expected = SODMetrics()
    for shift in (0, 2):
        expected.update(np.roll(gt, shift, axis=1).astype(np.float32), gt)
    assert r == expected.results() and r["images"] == 2
    assert score_sod_folders(pred_dir, gt_dir, ids=["a"])["MAE"] == 0.0
    write_gray(pred_dir / "b.png", np.zeros((10, 10), np.float32))
    with pytest.raises(InputError, match=r"b\.png.*10x10.*32x24"):
        score_sod_folders(pred_dir, gt_dir)
    (pred_dir / "b.png").unlink()
    with pytest.raises(InputError, match=r"b\.png.*missing"):
        score_sod_folders(pred_dir, gt_dir)
    with pytest.raises(InputError, match="no ground-truth"):
        score_sod_folders(pred_dir, gt_dir, ids=[])


def test_palette_masks_count_every_labelled_pixel_as_salient(tmp_path):
    idx = np.array([[0, 1], [255, 15]], np.uint8)
    img = Image.fromarray(idx).convert("P")
    img.putpalette([0, 0, 0, 128, 0, 0] + [64, 64, 64] * 254)  # dark colours: gray would say "background"
    img.save(tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as saved:
        assert saved.mode == "P"
    assert read_sod_mask(tmp_path / "m.png").tolist() == [[False, True], [True, True]]
