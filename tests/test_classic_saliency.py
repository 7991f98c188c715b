"""Training-free saliency (MB+ / RBD) and the centre-prior baseline."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from salmask.saliency.classic import (METHODS, centre_prior, classic_saliency,
                                      minimum_barrier_distance)

VOC_MINI = Path(__file__).resolve().parents[2] / "shared/data/voc-mini/VOCdevkit/VOC2012"


def _object_image(h: int = 60, w: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Noisy greenish background with a red disc in the middle; returns (image, disc mask)."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal((60, 140, 70), 12, (h, w, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2
    img[disc] = (210, 40, 40)
    return img, disc


def test_centre_prior():
    p = centre_prior(30, 40)
    assert p.shape == (30, 40) and p.dtype == np.float32
    assert 0.0 <= p.min() and p.max() <= 1.0 and p[15, 20] > 0.99 and p[0, 0] < 0.05
    with pytest.raises(ValueError):
        centre_prior(0, 5)


def test_minimum_barrier_distance_crosses_barriers():
    # Border-connected background has distance 0; the inside of a ring of height 50 needs to climb it.
    img = np.zeros((1, 21, 21), np.float32)
    img[0, 4:17, 4:17] = 50.0
    img[0, 6:15, 6:15] = 0.0
    img[0, 9:12, 9:12] = 80.0
    d = minimum_barrier_distance(img)[0]
    assert d[2, 2] == 0.0 and d[4, 4] == 50.0 and d[7, 7] == 50.0 and d[10, 10] == 80.0
    # A winding corridor of 0 from the border keeps distance 0 all along (multi-direction sweeps).
    maze = np.full((1, 12, 12), 100.0, np.float32)
    maze[0, 0:10, 2] = maze[0, 9, 2:10] = maze[0, 2:10, 9] = maze[0, 2, 5:10] = maze[0, 2:7, 5] = 0.0
    assert minimum_barrier_distance(maze)[0][6, 5] == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_object_scores_above_background(method):
    img, disc = _object_image()
    sal = classic_saliency(img, method=method)
    assert sal.shape == disc.shape and sal.dtype == np.float32
    assert np.isfinite(sal).all() and sal.min() >= 0.0 and sal.max() <= 1.0
    assert sal[disc].mean() > 0.6 and sal[~disc].mean() < 0.2


def test_working_resolution_keeps_output_size():
    img, disc = _object_image(150, 230)
    sal = classic_saliency(img, max_side=64)
    assert sal.shape == (150, 230) and sal[disc].mean() > sal[~disc].mean() + 0.4


@pytest.mark.parametrize("method", METHODS)
def test_constant_image_gives_zeros(method):
    sal = classic_saliency(np.full((40, 50, 3), 128, np.uint8), method=method)
    assert sal.shape == (40, 50) and not sal.any()


@pytest.mark.parametrize("method", METHODS)
def test_tiny_and_grayscale_images(method):
    img, disc = _object_image(8, 8)
    sal = classic_saliency(img, method=method)
    assert sal.shape == (8, 8) and np.isfinite(sal).all()
    gray, disc = _object_image()
    gray = gray.mean(2).astype(np.uint8)
    for g in (gray, gray[..., None]):
        sal = classic_saliency(g, method=method)
        assert sal.shape == gray.shape and sal[disc].mean() > sal[~disc].mean()


def test_bad_input():
    with pytest.raises(ValueError, match="method"):
        classic_saliency(np.zeros((8, 8, 3), np.uint8), method="spectral")
    with pytest.raises(ValueError, match="uint8"):
        classic_saliency(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        classic_saliency(np.zeros((8, 8, 4), np.uint8))


@pytest.mark.skipif(not VOC_MINI.is_dir(), reason="voc-mini not available")
def test_beats_centre_prior_on_voc_mini():
    from salmask.io import read_image
    from salmask.metrics.sod import SODMetrics, read_sod_mask

    ids = sorted(p.stem for p in (VOC_MINI / "SegmentationClassAug").glob("*.png"))
    ours, baseline = SODMetrics(), SODMetrics()
    for i in ids:
        img = read_image(VOC_MINI / "JPEGImages" / f"{i}.jpg")
        gt = read_sod_mask(VOC_MINI / "SegmentationClassAug" / f"{i}.png")
        ours.update(classic_saliency(img), gt)
        baseline.update(centre_prior(*gt.shape), gt)
    a, b = ours.results(), baseline.results()
    assert a["MAE"] < b["MAE"]
    for k in ("maxF", "Sm", "Em"):
        assert a[k] > b[k], (k, a[k], b[k])
