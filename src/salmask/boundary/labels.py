"""Boundary labels from CAMs (BES) and saliency (SBE), docs/method.md#boundary-labels.

Two steps per image:

1. :func:`confident_map` — confident foreground / background from the full-size CAMs, each
   optionally refined by a dense CRF: a uint8 [H,W] map of class ids, 0 (background) and
   :data:`UNCERTAIN` (255).
2. :func:`synthesize` — class fractions in a sliding window turn that map into the label codes
   below; with a saliency map, non-salient pixels start as background and strong saliency edges
   become certain boundaries (SBE).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from salmask.boundary.crf import crf_enabled, crf_labels
from salmask.cam.evaluate import class_lut, scores_to_index
from salmask.errors import ArgumentError

logger = logging.getLogger("salmask")

BG = 0
FG = 50
BOUNDARY_FG_FG = 100
BOUNDARY_FG_BG = 150
IGNORE = 200
CERTAIN_BOUNDARY = 250
UNCERTAIN = 255
"""Value of :func:`confident_map` where neither foreground nor background is confident."""


def confident_map(high_res: np.ndarray, keys: np.ndarray, image: np.ndarray | None, *,
                  fg_thres: float = 0.30, bg_thres: float = 0.07, use_crf: bool = True) -> np.ndarray:
    """Confident foreground/background map of one image (docs/method.md#boundary-labels step 1).

    The foreground map is the argmax over [fg_thres, CAMs], the background map the argmax over
    [bg_thres, CAMs], each refined by a dense CRF (unary gt_prob 0.7, IRNet/BES settings) when
    ``use_crf`` (a ``ConfigError`` when the CRF is not installed, never a silent fallback).

    Args:
        high_res: CAMs [K,H,W] of the image's positive classes, in [0, 1].
        keys: class ids [K] (1..C) of those CAMs.
        image: RGB uint8 [H,W,3]; required when ``use_crf``.

    Returns:
        uint8 [H,W]: the class id where the foreground map is confident, 0 where both maps say
        background, :data:`UNCERTAIN` elsewhere. K = 0 gives all background.
    """
    high_res = np.asarray(high_res, dtype=np.float32)
    keys = np.asarray(keys)
    if high_res.ndim != 3:
        raise ArgumentError(f"high_res CAMs must be [K,H,W], got shape {high_res.shape}")
    if keys.shape != (high_res.shape[0],):
        raise ArgumentError(f"keys {keys.shape} do not match {high_res.shape[0]} CAMs")
    if keys.size and (not np.issubdtype(keys.dtype, np.integer)
                      or keys.min() < 1 or keys.max() >= UNCERTAIN):
        raise ArgumentError(f"keys must be integer class ids in [1, {UNCERTAIN - 1}], got {keys}")
    if not np.isfinite(high_res).all():
        raise ArgumentError("high_res CAMs contain NaN or infinity")
    if use_crf and image is None:
        raise ArgumentError("confident_map needs the image for CRF refinement (or use_crf=False)")
    hw = high_res.shape[1:]
    if high_res.shape[0] == 0:
        return np.zeros(hw, dtype=np.uint8)
    refine = crf_enabled(use_crf, "use_crf")
    lut = class_lut(keys)

    def thresholded(thres: float) -> np.ndarray:
        idx = scores_to_index(high_res, thres)
        if refine:
            idx = crf_labels(image, idx, n_labels=len(lut))
        return lut[idx]

    fg, bg = thresholded(fg_thres), thresholded(bg_thres)
    conf = np.where(fg == 0, UNCERTAIN, fg).astype(np.uint8)
    conf[(fg == 0) & (bg == 0)] = 0
    return conf


def saliency_is_informative(saliency: np.ndarray) -> bool:
    """False for a constant (e.g. all-zero) saliency map, for which SBE steps are skipped."""
    saliency = np.asarray(saliency)
    return saliency.size > 0 and saliency.max() > saliency.min()


def _box_counts(masks: np.ndarray, window: int) -> np.ndarray:
    """Per-mask pixel counts in a ``window``×``window`` box around each pixel; [N,H,W] → int64 [N,H,W].

    Pixels outside the image count as nothing (zero padding); integer sums keep the
    comparisons against θ exact at ties.
    """
    r = window // 2
    n, h, w = masks.shape
    integral = np.zeros((n, h + 2 * r + 1, w + 2 * r + 1), dtype=np.int64)
    integral[:, r + 1:r + 1 + h, r + 1:r + 1 + w] = masks
    integral = integral.cumsum(axis=1).cumsum(axis=2)
    return (integral[:, window:, window:] - integral[:, :h, window:]
            - integral[:, window:, :w] + integral[:, :h, :w])


def saliency_edges(saliency: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude [H,W] of the max-normalised saliency map [H,W] (docs/method.md#boundary-labels step 4).

    As SBE's release: the unnormalised 3×3 Sobel pair (a unit step scores 4) without padding gives
    (H−2)×(W−2) magnitudes, resized bilinearly (half-pixel centres) back to H×W. Maps smaller than 3×3
    have no edges.
    """
    s = np.asarray(saliency, dtype=np.float64)
    if min(s.shape) < 3:
        return np.zeros(s.shape)
    s = s / s.max()
    inner = (slice(1, -1), slice(1, -1))  # the valid part of a padded correlation is the unpadded one
    magnitude = np.hypot(ndimage.sobel(s, axis=0)[inner], ndimage.sobel(s, axis=1)[inner])
    resized = F.interpolate(torch.from_numpy(magnitude)[None, None], size=s.shape, mode="bilinear",
                            align_corners=False)
    return resized[0, 0].numpy()


def synthesize(conf: np.ndarray, saliency: np.ndarray | None, *, window: int = 13,
               theta_scale: float = 0.3, theta_diff: float = 0.1,
               sal_edge_thres: float = 0.5) -> np.ndarray:
    """Boundary label codes [H,W] from a confident map (docs/method.md#boundary-labels steps 2–4).

    In a ``window``×``window`` box around each pixel (counting in-image pixels only) P_bg is the
    fraction of background pixels and f1 ≥ f2 the two largest class fractions; uncertain pixels
    count as neither. Every pixel starts as IGNORE; then (SBE) BG where saliency == 0; then, each
    overwriting the previous (θs = ``theta_scale``, θd = ``theta_diff``)::

        BG              P_bg > 2θs and P_bg − f1 ≥ 2θd
        FG              f1 > 2θs and f1 − P_bg ≥ 2θd
        BOUNDARY_FG_BG  min(f1, P_bg) > θs and |f1 − P_bg| < θd
        BOUNDARY_FG_FG  f2 > θs and f1 − f2 < θd

    and last (SBE) CERTAIN_BOUNDARY where :func:`saliency_edges` > ``sal_edge_thres``.

    Args:
        conf: uint8 [H,W] from :func:`confident_map` (0 background, class ids, 255 uncertain).
        saliency: [H,W] non-negative saliency of the same size, or None for plain BES labels.
            A constant map (e.g. all zero) carries no saliency information: the SBE steps are
            skipped (logged at INFO; see :func:`saliency_is_informative`).

    Returns:
        uint8 [H,W] of BG, FG, BOUNDARY_FG_FG, BOUNDARY_FG_BG, IGNORE, CERTAIN_BOUNDARY.
    """
    conf = np.asarray(conf)
    if conf.ndim != 2 or not np.issubdtype(conf.dtype, np.integer):
        raise ArgumentError(f"conf must be an integer [H,W] map, got {conf.dtype} {conf.shape}")
    if window < 1 or window % 2 == 0:
        raise ArgumentError(f"window must be a positive odd number, got {window}")
    use_saliency = saliency is not None
    if use_saliency:
        saliency = np.asarray(saliency, dtype=np.float64)
        if saliency.shape != conf.shape:
            raise ArgumentError(f"saliency shape {saliency.shape} differs from conf shape {conf.shape}")
        if not np.isfinite(saliency).all() or saliency.min() < 0:
            raise ArgumentError("saliency must be finite and non-negative")
        if not saliency_is_informative(saliency):
            logger.info("constant saliency map: SBE steps skipped, plain BES labels")
            use_saliency = False

    classes = np.setdiff1d(np.unique(conf), [0, UNCERTAIN])
    masks = np.concatenate([(conf == 0)[None], conf[None] == classes[:, None, None],
                            np.ones((1, *conf.shape), dtype=bool)])
    counts = _box_counts(masks, window)
    n_bg, n_total = counts[0], counts[-1]
    top = np.sort(counts[1:-1], axis=0)[::-1]
    n1 = top[0] if len(top) > 0 else np.zeros_like(n_bg)
    n2 = top[1] if len(top) > 1 else np.zeros_like(n_bg)

    def frac(n: np.ndarray) -> np.ndarray:
        return n / n_total

    labels = np.full(conf.shape, IGNORE, dtype=np.uint8)
    if use_saliency:
        labels[saliency == 0] = BG
    labels[(frac(n_bg) > 2 * theta_scale) & (frac(n_bg - n1) >= 2 * theta_diff)] = BG
    labels[(frac(n1) > 2 * theta_scale) & (frac(n1 - n_bg) >= 2 * theta_diff)] = FG
    fg_bg = (frac(np.minimum(n1, n_bg)) > theta_scale) & (frac(np.abs(n1 - n_bg)) < theta_diff)
    labels[fg_bg] = BOUNDARY_FG_BG
    labels[(frac(n2) > theta_scale) & (frac(n1 - n2) < theta_diff)] = BOUNDARY_FG_FG
    if use_saliency:
        labels[saliency_edges(saliency) > sal_edge_thres] = CERTAIN_BOUNDARY
    return labels


def boundary_labels(high_res: np.ndarray, keys: np.ndarray, saliency: np.ndarray | None,
                    image: np.ndarray | None = None, *, fg_thres: float = 0.30, bg_thres: float = 0.07,
                    use_crf: bool = True, window: int = 13, theta_scale: float = 0.3, theta_diff: float = 0.1,
                    sal_edge_thres: float = 0.5) -> np.ndarray:
    """Boundary label codes uint8 [H,W] of one image: :func:`confident_map`, then :func:`synthesize`.

    ``high_res`` CAMs [K,H,W] in [0,1] of the classes ``keys`` [K]; ``saliency`` [H,W] (SBE labels) or
    None (BES labels); ``image`` RGB uint8 [H,W,3], needed when ``use_crf``.
    """
    conf = confident_map(high_res, keys, image, fg_thres=fg_thres, bg_thres=bg_thres, use_crf=use_crf)
    return synthesize(conf, saliency, window=window, theta_scale=theta_scale, theta_diff=theta_diff,
                      sal_edge_thres=sal_edge_thres)
