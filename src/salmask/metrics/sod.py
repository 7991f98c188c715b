"""Salient-object-detection metrics over ``pysodmetrics`` (``import py_sod_metrics``; written against 1.6.2).

The conventions are those of the field's evaluation toolkits (PySODEvalToolkit), so numbers are
comparable with published ones:

* a prediction is an 8-bit grayscale map; a float map in [0, 1] is first rounded to 8 bits exactly as
  :func:`salmask.io.write_gray` stores it, so scoring in memory and scoring the written PNGs agree;
  pysodmetrics then min-max normalises each map (MATLAB ``mapminmax``);
* scores are averaged over images; all are fractions in [0, 1] (not percent):

  - ``MAE``   mean absolute error (lower is better);
  - ``maxF`` / ``meanF``  max / mean over the 256 thresholds of the image-averaged F-measure curve,
    beta² = 0.3; ``adpF`` F-measure at the adaptive threshold 2 × mean(pred);
  - ``Sm``    S-measure (alpha = 0.5);
  - ``Em``    mean E-measure over thresholds (the usual "mEm"); ``maxEm`` and ``adpEm`` are reported too.
    Like the MATLAB reference, pysodmetrics divides by H·W - 1, so a perfect map scores
    H·W / (H·W - 1), a hair above 1.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import py_sod_metrics as psm

from salmask.errors import InputError
from salmask.io import open_image, read_gray

BETA2 = 0.3


class SODMetrics:
    """Accumulates MAE, F-measure (max/mean/adaptive), S-measure and E-measure over images."""

    def __init__(self) -> None:
        self._mae = psm.MAE()
        self._sm = psm.Smeasure()
        self._em = psm.Emeasure()
        self._fm = psm.FmeasureV2(metric_handlers={
            "fm": psm.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=BETA2)})
        self.count = 0

    def update(self, pred: np.ndarray, gt: np.ndarray, name: str = "prediction") -> None:
        """Add one image: ``pred`` [H, W] float in [0, 1] or uint8 0..255; ``gt`` [H, W] mask.

        ``gt`` is bool, or integer with foreground = nonzero when its values are 0/1 and = above 128
        otherwise (0/255 masks, antialiased or not). ``name`` labels errors.
        """
        pred8 = _pred_to_uint8(pred, name)
        gt8 = _gt_to_uint8(gt, name)
        if pred8.shape != gt8.shape:
            raise InputError(name, f"prediction size {pred8.shape[1]}x{pred8.shape[0]} (WxH) differs "
                                   f"from ground-truth size {gt8.shape[1]}x{gt8.shape[0]}")
        with warnings.catch_warnings():  # numpy warns on the NaN case handled just below
            warnings.simplefilter("ignore", RuntimeWarning)
            self._sm.step(pred=pred8, gt=gt8, normalize=True)
        if not np.isfinite(self._sm.sms[-1]):
            self._sm.sms.pop()
            raise InputError(name, f"S-measure is undefined for this {gt8.shape[1]}x{gt8.shape[0]} map "
                                   "(a quadrant around the object centroid has a single pixel)")
        for metric in (self._mae, self._em, self._fm):
            metric.step(pred=pred8, gt=gt8, normalize=True)
        self.count += 1

    def results(self) -> dict:
        """``{MAE, maxF, meanF, adpF, Sm, Em, maxEm, adpEm}`` as floats, plus ``images``.

        All lie in [0, 1] except that the E-measures can exceed 1 by up to 1/(H·W - 1).
        """
        if self.count == 0:
            raise ValueError("no images were added to SODMetrics; nothing to score")
        fm = self._fm.get_results()["fm"]
        em = self._em.get_results()["em"]
        out = {
            "MAE": self._mae.get_results()["mae"],
            "maxF": fm["dynamic"].max(),
            "meanF": fm["dynamic"].mean(),
            "adpF": fm["adaptive"],
            "Sm": self._sm.get_results()["sm"],
            "Em": em["curve"].mean(),
            "maxEm": em["curve"].max(),
            "adpEm": em["adp"],
        }
        out = {k: float(v) for k, v in out.items()}
        out["images"] = self.count
        return out


def _pred_to_uint8(pred: np.ndarray, name: str) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim != 2:
        raise InputError(name, f"prediction must be a [H, W] map, got shape {pred.shape}")
    if pred.dtype == np.uint8:
        return pred
    if pred.dtype == bool:
        return pred.astype(np.uint8) * 255
    if not np.issubdtype(pred.dtype, np.floating):
        raise InputError(name, f"prediction must be float in [0, 1] or uint8, got {pred.dtype}")
    if not np.isfinite(pred).all():
        raise InputError(name, "prediction contains NaN or infinite values")
    if pred.size and (pred.min() < 0.0 or pred.max() > 1.0):
        raise InputError(name, f"float prediction must lie in [0, 1], got [{pred.min():.4g}, "
                               f"{pred.max():.4g}]")
    return np.round(pred.astype(np.float32) * 255.0).astype(np.uint8)


def _gt_to_uint8(gt: np.ndarray, name: str) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise InputError(name, f"ground truth must be a [H, W] mask, got shape {gt.shape}")
    if gt.dtype != bool:
        if not np.issubdtype(gt.dtype, np.integer):
            raise InputError(name, f"ground truth must be bool or integer, got {gt.dtype}")
        gt = gt > 0 if gt.size and gt.max() <= 1 else gt > 128
    return gt.astype(np.uint8) * 255


def read_sod_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a salient-object mask as bool [H, W].

    A palette PNG is an index mask (VOC layout): every nonzero index is foreground, the 255 "ignore"
    band around VOC objects included, since the metrics have no ignore region. Any other PNG is read
    as 8-bit gray with the :meth:`SODMetrics.update` rule (0/1 masks: nonzero; else above 128).
    """
    img = open_image(Path(path))
    if img.mode == "P":
        return np.asarray(img) > 0
    gray = np.asarray(img.convert("L"), dtype=np.uint8)
    return gray > 0 if gray.max(initial=0) <= 1 else gray > 128


def score_sod_folders(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike,
                      ids: Iterable[str] | None = None) -> dict:
    """Score grayscale ``{id}.png`` maps of ``pred_dir`` against masks ``{id}.png`` of ``gt_dir``.

    ``ids`` default to every PNG of the GT folder; masks are read by :func:`read_sod_mask`. Returns
    :meth:`SODMetrics.results` (with ``images``). A missing prediction or a size mismatch is an
    :class:`InputError` naming the file.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not gt_dir.is_dir():
        raise InputError(gt_dir, "ground-truth folder not found")
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "prediction folder not found")
    ids = sorted(p.stem for p in gt_dir.glob("*.png")) if ids is None else list(ids)
    if not ids:
        raise InputError(gt_dir, "no ground-truth PNGs to score")
    metrics = SODMetrics()
    for i in ids:
        pred_path = pred_dir / f"{i}.png"
        if not pred_path.is_file():
            raise InputError(pred_path, "prediction missing")
        gt = read_sod_mask(gt_dir / f"{i}.png")
        pred = read_gray(pred_path)
        metrics.update(pred, gt, name=str(pred_path))
    return metrics.results()
