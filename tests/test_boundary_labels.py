"""Boundary labels (docs/method.md#boundary-labels) and the dense CRF wrapper."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from salmask.boundary import crf
from salmask.errors import ConfigError
from salmask.boundary.labels import (BG, BOUNDARY_FG_BG, BOUNDARY_FG_FG, CERTAIN_BOUNDARY, FG,
                                     IGNORE, UNCERTAIN, confident_map, saliency_edges,
                                     saliency_is_informative, synthesize)

needs_crf = pytest.mark.skipif(not crf.crf_available(), reason="pydensecrf not installed")


def square_conf(size: int = 40, lo: int = 10, hi: int = 30, cls: int = 1) -> np.ndarray:
    conf = np.zeros((size, size), np.uint8)
    conf[lo:hi, lo:hi] = cls
    return conf


def brute_force_labels(conf: np.ndarray, window: int, ts: float = 0.3, td: float = 0.1) -> np.ndarray:
    """docs/method.md#boundary-labels steps 2-3 (no saliency), one pixel at a time."""
    r = window // 2
    h, w = conf.shape
    out = np.full(conf.shape, IGNORE, np.uint8)
    classes = [c for c in np.unique(conf) if c not in (0, UNCERTAIN)]
    for y in range(h):
        for x in range(w):
            win = conf[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
            pbg = (win == 0).mean()
            fr = sorted([(win == c).mean() for c in classes] + [0.0, 0.0], reverse=True)
            f1, f2 = fr[0], fr[1]
            if pbg > 2 * ts and pbg - f1 >= 2 * td - 1e-12:
                out[y, x] = BG
            if f1 > 2 * ts and f1 - pbg >= 2 * td - 1e-12:
                out[y, x] = FG
            if min(f1, pbg) > ts and abs(f1 - pbg) < td:
                out[y, x] = BOUNDARY_FG_BG
            if f2 > ts and f1 - f2 < td:
                out[y, x] = BOUNDARY_FG_FG
    return out


# ---- synthesize: BES part -------------------------------------------------------------------

def test_square_on_background_by_hand():
    labels = synthesize(square_conf(), None)
    assert labels.dtype == np.uint8 and labels.shape == (40, 40)
    assert labels[20, 20] == FG and labels[2, 2] == BG and labels[37, 37] == BG
    # Row 20 across the left edge (square starts at column 10), window 13: column x sees
    # x+6-9 class pixels of 13; columns 9 and 10 are the 6/7 and 7/6 splits.
    assert labels[20, 6:14].tolist() == [BG, BG, BG, BOUNDARY_FG_BG, BOUNDARY_FG_BG, FG, FG, FG]
    assert labels[6:14, 20].tolist() == [BG, BG, BG, BOUNDARY_FG_BG, BOUNDARY_FG_BG, FG, FG, FG]
    assert not (labels == BOUNDARY_FG_FG).any() and not (labels == CERTAIN_BOUNDARY).any()


def test_two_touching_classes_give_fg_fg_boundary():
    conf = np.ones((30, 40), np.uint8)
    conf[:, 20:] = 2
    labels = synthesize(conf, None)
    assert labels[15, 17:23].tolist() == [FG, FG, BOUNDARY_FG_FG, BOUNDARY_FG_FG, FG, FG]
    assert not (labels == BG).any()


def test_padding_not_counted_at_borders():
    assert (synthesize(np.full((20, 25), 3, np.uint8), None) == FG).all()
    assert (synthesize(np.zeros((20, 25), np.uint8), None) == BG).all()
    strip = np.zeros((30, 30), np.uint8)
    strip[:, :5] = 1
    # Column 0 sees columns 0..6 only: 5/7 class, 2/7 background -> FG (5/13 if padding counted).
    assert synthesize(strip, None)[15, 0] == FG


def test_uncertain_pixels_count_as_neither():
    conf = np.full((20, 20), UNCERTAIN, np.uint8)
    assert (synthesize(conf, None) == IGNORE).all()
    conf[:, :10] = 0
    labels = synthesize(conf, None)
    assert labels[10, 0] == BG and labels[10, 19] == IGNORE


@pytest.mark.parametrize("window", [5, 13])
def test_matches_brute_force(window):
    rng = np.random.default_rng(window)
    conf = rng.choice(np.array([0, 1, 4, UNCERTAIN], np.uint8), size=(18, 23), p=[0.4, 0.25, 0.25, 0.1])
    conf[:9, :12] = 4
    conf[9:, 12:] = 0
    np.testing.assert_array_equal(synthesize(conf, None, window=window), brute_force_labels(conf, window))


# ---- synthesize: SBE part -------------------------------------------------------------------

def test_zero_saliency_region_becomes_background_but_cam_foreground_wins():
    conf = np.full((40, 40), UNCERTAIN, np.uint8)
    conf[5:25, 5:25] = 1
    sal = np.zeros((40, 40), np.float32)
    sal[38:, 38:] = 1.0
    bes, sbe = synthesize(conf, None), synthesize(conf, sal)
    assert bes[35, 5] == IGNORE and sbe[35, 5] == BG
    assert bes[15, 15] == sbe[15, 15] == FG


def test_saliency_step_edge_is_certain_boundary():
    conf = np.full((30, 40), UNCERTAIN, np.uint8)
    conf[:, 15:25] = 2
    sal = np.zeros((30, 40), np.float32)
    sal[:, 20:] = 0.1  # raw Sobel magnitude 0.4 < 0.5: only the max-normalised map (4) passes
    labels = synthesize(conf, sal)
    assert (labels[:, 19:21] == CERTAIN_BOUNDARY).all()
    assert not (np.delete(labels, [19, 20], axis=1) == CERTAIN_BOUNDARY).any()
    assert labels[15, 5] == BG and labels[15, 30] == IGNORE


def test_gentle_saliency_ramp_makes_no_certain_boundary():
    sal = np.tile(np.linspace(0.0, 1.0, 30, dtype=np.float32), (30, 1))
    np.testing.assert_allclose(saliency_edges(sal)[5:-5, 5:-5], 4 * 2 / 29, rtol=1e-6)
    assert not (synthesize(square_conf(30, 8, 22), sal) == CERTAIN_BOUNDARY).any()


@pytest.mark.parametrize("value", [0.0, 0.6])
def test_constant_saliency_is_skipped_without_nan(value, caplog):
    conf = square_conf()
    conf[0:3, :] = UNCERTAIN
    sal = np.full(conf.shape, value, np.float32)
    assert not saliency_is_informative(sal)
    with caplog.at_level(logging.INFO, logger="salmask"):
        labels = synthesize(conf, sal)
    np.testing.assert_array_equal(labels, synthesize(conf, None))
    assert "SBE steps skipped" in caplog.text


def test_bad_inputs_raise():
    conf = square_conf()
    with pytest.raises(ValueError, match=r"\(20, 40\).*\(40, 40\)"):
        synthesize(conf, np.zeros((20, 40)))
    with pytest.raises(ValueError, match="non-negative"):
        synthesize(conf, np.full((40, 40), -1.0))
    with pytest.raises(ValueError, match="finite"):
        synthesize(conf, np.full((40, 40), np.nan))
    with pytest.raises(ValueError, match="odd"):
        synthesize(conf, None, window=12)
    with pytest.raises(ValueError, match="integer"):
        synthesize(conf.astype(np.float32), None)


# ---- confident_map ----------------------------------------------------------------------------

def test_confident_map_without_crf_by_hand():
    cams = np.zeros((2, 10, 12), np.float32)
    cams[0, :, :3] = 0.9    # class 3: confident foreground
    cams[1, :, 3:6] = 0.5   # class 7: confident foreground
    cams[0, :, 6:9] = 0.2   # class 3 above bg_thres, below fg_thres: uncertain
    conf = confident_map(cams, np.array([3, 7]), None, use_crf=False)
    assert conf.dtype == np.uint8
    assert conf[0].tolist() == [3] * 3 + [7] * 3 + [UNCERTAIN] * 3 + [0] * 3


def test_confident_map_no_positive_class_is_background():
    img = np.zeros((8, 9, 3), np.uint8)
    for use_crf in (False, True):
        conf = confident_map(np.zeros((0, 8, 9)), np.zeros(0, np.int64), img, use_crf=use_crf)
        assert conf.shape == (8, 9) and (conf == 0).all()


def test_confident_map_rejects_bad_input():
    cams = np.zeros((1, 6, 6), np.float32)
    with pytest.raises(ValueError, match="keys"):
        confident_map(cams, np.array([1, 2]), None, use_crf=False)
    with pytest.raises(ValueError, match="class ids"):
        confident_map(cams, np.array([0]), None, use_crf=False)
    with pytest.raises(ValueError, match="image"):
        confident_map(cams, np.array([1]), None, use_crf=True)
    with pytest.raises(ValueError, match="NaN"):
        confident_map(np.full((1, 6, 6), np.nan), np.array([1]), None, use_crf=False)


def test_missing_crf_is_an_error_naming_both_fixes(monkeypatch):
    monkeypatch.setattr(crf, "crf_available", lambda: False)
    cams = np.zeros((1, 12, 12), np.float32)
    cams[0, 3:9, 3:9] = 0.8
    img = np.zeros((12, 12, 3), np.uint8)
    with pytest.raises(ConfigError, match=r"salmask\[crf\].*use_crf=false"):
        confident_map(cams, np.array([5]), img, use_crf=True)
    with pytest.raises(ConfigError, match=r"boundary_labels.crf=false"):
        crf.crf_enabled(True, "boundary_labels.crf")
    assert crf.crf_enabled(False, "boundary_labels.crf") is False
    confident_map(cams, np.array([5]), None, use_crf=False)  # not asked for: no error
    with pytest.raises(crf.SalmaskError, match="not installed"):
        crf.dense_crf(img, np.ones((1, 12, 12)))


@needs_crf
def test_confident_map_crf_snaps_to_image_edge():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, 20:] = 255
    img.flags.writeable = False  # as np.asarray(PIL image) gives
    cams = np.zeros((1, 40, 40), np.float32)
    cams[0, :, 17:] = 0.9  # spills three columns into the black half
    raw = confident_map(cams, np.array([1]), img, use_crf=False)
    refined = confident_map(cams, np.array([1]), img, use_crf=True)
    assert (raw[:, 17:20] == 1).all()
    assert (refined[:, :20] == 0).all() and (refined[:, 20:] == 1).all()


@needs_crf
def test_dense_crf_posterior_and_label_wrapper():
    rng = np.random.default_rng(0)
    img = np.zeros((16, 20, 3), np.uint8)
    img[:, 10:] = 200
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=(16, 20)).transpose(2, 0, 1)
    q = crf.dense_crf(img, probs, gt_prob=0.8)
    assert q.shape == (3, 16, 20) and np.isfinite(q).all()
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-4)
    labels = np.zeros((16, 20), np.int64)
    labels[:, 10:] = 2
    np.testing.assert_array_equal(crf.crf_labels(img, labels, 3), labels)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        crf.crf_labels(img, labels, 2)
    with pytest.raises(ValueError, match="image"):
        crf.dense_crf(img[:8], probs)
