"""CAM evaluation: a constant background score t, argmax, mIoU — for a sweep of t in one pass."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from salmask.errors import InputError
from salmask.metrics.confusion import ConfusionMatrix


def with_background(scores: np.ndarray, bg: float) -> np.ndarray:
    """[K,H,W] -> float32 [K+1,H,W]: a constant background score ``bg`` first (IRNet's padded background)."""
    return np.concatenate([np.full((1, *scores.shape[1:]), bg, np.float32), scores.astype(np.float32)])


def scores_to_index(scores: np.ndarray, bg: float) -> np.ndarray:
    """[K,H,W] -> int64 [H,W] indices into [background, *keys] (background where every score < bg)."""
    return with_background(scores, bg).argmax(0)


def class_lut(keys: np.ndarray) -> np.ndarray:
    """Class ids [K] -> uint8 [K+1] mapping an index into [background, *keys] to its class id."""
    return np.concatenate([[0], keys]).astype(np.uint8)


def cam_to_labels(high_res: np.ndarray, keys: np.ndarray, bg: float) -> np.ndarray:
    """[K,H,W] scores of classes ``keys`` -> uint8 [H,W] label map with background where all < bg."""
    if len(keys) == 0:
        return np.zeros(high_res.shape[1:], dtype=np.uint8)
    return class_lut(keys)[scores_to_index(high_res, bg)]


class ThresholdSweep:
    """One confusion matrix per background threshold, filled image by image in one pass.

    The class a pixel takes when it is foreground (the argmax over ``keys``) does not depend on the
    threshold, only whether it is foreground does (its best score above t; a tie goes to background, as in
    :func:`scores_to_index`). So each image adds one histogram over (GT class, class, number of thresholds
    below the best score), and every threshold's matrix is read off its cumulative sums: the same matrices
    as scoring :func:`cam_to_labels` at each threshold, at the cost of one.
    """

    def __init__(self, thresholds: Sequence[float], num_classes: int):
        self.thresholds = [float(t) for t in thresholds]
        self.cms = [ConfusionMatrix(num_classes) for _ in self.thresholds]
        self._order = np.argsort(self.thresholds, kind="stable")
        self._sorted = np.asarray(self.thresholds, np.float32)[self._order]  # compared in float32, as the argmax

    def update(self, high_res: np.ndarray, keys: np.ndarray, gt: np.ndarray, name: str = "") -> None:
        """``high_res`` [K,H,W] scores of the classes ``keys`` [K], ``gt`` [H,W] class ids (255 ignored)."""
        c, n = self.cms[0].num_classes, len(self.thresholds) + 1
        gt = np.asarray(gt).astype(np.int64)
        if len(keys) == 0:
            level = np.zeros(high_res.shape[1:], np.int64)
            cls = np.zeros(high_res.shape[1:], np.int64)
        else:
            scores = high_res.astype(np.float32)
            level = np.searchsorted(self._sorted, scores.max(0), side="left")  # thresholds below the best score
            cls = class_lut(keys).astype(np.int64)[1 + scores.argmax(0)]
        if cls.shape != gt.shape:
            raise InputError(name, f"prediction shape {cls.shape} != ground truth shape {gt.shape}")
        if cls.size and int(cls.max()) >= c:
            raise InputError(name, f"class ids {sorted(set(keys.tolist()))} outside 0..{c - 1}")
        valid = gt != self.cms[0].ignore_index
        bad = valid & ((gt < 0) | (gt >= c))
        if bad.any():
            raise InputError(name, f"ground-truth values {sorted(np.unique(gt[bad]).tolist())[:8]} outside "
                                   f"0..{c - 1}")
        counts = np.bincount(((gt[valid] * c + cls[valid]) * n + level[valid]),
                             minlength=c * c * n).reshape(c, c, n)
        below = counts.cumsum(-1)  # below[g, k, j]: pixels with at most j thresholds under their score
        for j, t in enumerate(self._order):  # sorted threshold j: foreground iff more than j lie below
            fg = below[:, :, -1] - below[:, :, j]
            fg[:, 0] += below[:, :, j].sum(1)
            self.cms[t].hist += fg

    def all_reduce(self) -> "ThresholdSweep":
        for cm in self.cms:
            cm.all_reduce()
        return self

    def table(self, class_names: Sequence[str]) -> list[dict]:
        return [{"threshold": t, **cm.scores(class_names)} for t, cm in zip(self.thresholds, self.cms)]
