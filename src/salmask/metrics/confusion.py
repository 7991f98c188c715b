"""Confusion-matrix accumulator for semantic segmentation (mmsegmentation-style).

The matrix ``hist[g, p]`` counts pixels of ground-truth class ``g`` predicted as ``p``. It is summed
over batches with :meth:`update` and over ``torch.distributed`` ranks with :meth:`all_reduce`, and all
scores derive from it:

* Acc       = trace(hist) / hist.sum()
* Acc_class = mean_c hist[c, c] / hist[c, :].sum()          (classes present in GT)
* IoU_c     = hist[c, c] / (hist[c, :].sum() + hist[:, c].sum() - hist[c, c])
* mIoU      = mean of IoU_c over classes with a non-empty union
* fwIoU     = sum_c freq_c * IoU_c,  freq_c = hist[c, :].sum() / hist.sum()
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from salmask.errors import InputError


class ConfusionMatrix:
    """Accumulates a [C, C] int64 confusion matrix; GT pixels equal to ``ignore_index`` are skipped."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.hist = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, *, pred_ignore_as: int | None = 0,
               name: str = "prediction") -> None:
        """Add one image (or batch) of integer maps ``pred`` and ``gt`` of the same shape.

        ``pred`` values equal to ``ignore_index`` are mapped to ``pred_ignore_as`` (background by the
        field's convention for pseudo masks); any other value outside ``[0, C)`` is an error.
        """
        pred = np.asarray(pred).astype(np.int64)
        gt = np.asarray(gt).astype(np.int64)
        if pred.shape != gt.shape:
            raise InputError(name, f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
        if pred_ignore_as is not None:
            pred = np.where(pred == self.ignore_index, pred_ignore_as, pred)
        bad = (pred < 0) | (pred >= self.num_classes)
        if bad.any():
            vals = sorted(set(np.unique(pred[bad]).tolist()))[:8]
            raise InputError(name, f"prediction values {vals} outside 0..{self.num_classes - 1}")
        valid = gt != self.ignore_index
        g_bad = valid & ((gt < 0) | (gt >= self.num_classes))
        if g_bad.any():
            vals = sorted(set(np.unique(gt[g_bad]).tolist()))[:8]
            raise InputError(name, f"ground-truth values {vals} outside 0..{self.num_classes - 1}")
        idx = gt[valid] * self.num_classes + pred[valid]
        self.hist += np.bincount(idx, minlength=self.num_classes ** 2).reshape(
            self.num_classes, self.num_classes)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        self.hist += other.hist
        return self

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the matrix over all ``torch.distributed`` ranks (no-op when not initialised)."""
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            t = torch.from_numpy(self.hist.copy())
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            self.hist = t.numpy().astype(np.int64)
        return self

    def iou(self) -> np.ndarray:
        """Per-class IoU [C]; NaN for classes absent from both prediction and GT."""
        h = self.hist.astype(np.float64)
        tp = np.diag(h)
        union = h.sum(0) + h.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def scores(self, class_names: Sequence[str] | None = None) -> dict:
        """Acc, Acc_class, mIoU, fwIoU in percent, plus ``per_class`` IoU (percent or None)."""
        h = self.hist.astype(np.float64)
        total = h.sum()
        tp = np.diag(h)
        gt_count = h.sum(1)
        iou = self.iou()
        with np.errstate(divide="ignore", invalid="ignore"):
            acc_cls = np.where(gt_count > 0, tp / np.maximum(gt_count, 1), np.nan)
        freq = gt_count / total if total > 0 else np.zeros_like(gt_count)
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        out = {
            "Acc": 100.0 * (tp.sum() / total) if total > 0 else float("nan"),
            "Acc_class": 100.0 * float(np.nanmean(acc_cls)) if np.isfinite(acc_cls).any() else float("nan"),
            "mIoU": 100.0 * float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "fwIoU": 100.0 * float(np.nansum(freq * np.nan_to_num(iou))),
            "per_class": {n: (None if np.isnan(v) else 100.0 * float(v)) for n, v in zip(names, iou)},
            "pixels": int(total),
        }
        return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in out.items()}


def format_table(scores: dict, title: str = "") -> str:
    """Render :meth:`ConfusionMatrix.scores` as a plain-text table."""
    lines = [title] if title else []
    lines.append("  ".join(f"{k}={scores[k]:.2f}" for k in ("Acc", "Acc_class", "mIoU", "fwIoU")))
    for name, v in scores.get("per_class", {}).items():
        lines.append(f"  {name:<16} {'-' if v is None else f'{v:6.2f}'}")
    return "\n".join(lines)


def score_folders(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, num_classes: int,
                  ids: Iterable[str] | None = None, ignore_index: int = 255,
                  class_names: Sequence[str] | None = None) -> dict:
    """Score every ``{id}.png`` of ``pred_dir`` against ``gt_dir`` (ids default to the GT folder's).

    A missing prediction is an error naming the file; a prediction with a different size is an error.
    """
    from salmask.io import read_mask

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not gt_dir.is_dir():
        raise InputError(gt_dir, "ground-truth folder not found")
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "prediction folder not found")
    if ids is None:
        ids = sorted(p.stem for p in gt_dir.glob("*.png"))
    cm = ConfusionMatrix(num_classes, ignore_index)
    n = 0
    for i in ids:
        gt = read_mask(gt_dir / f"{i}.png", num_classes, ignore_index)
        pred_path = pred_dir / f"{i}.png"
        pred = read_mask(pred_path)
        cm.update(pred, gt, name=str(pred_path))
        n += 1
    if n == 0:
        raise InputError(gt_dir, "no ground-truth PNGs to score")
    out = cm.scores(class_names)
    out["images"] = n
    return out
