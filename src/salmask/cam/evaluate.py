"""CAM evaluation: a constant background score t, argmax, mIoU — for a sweep of t in one pass."""
from __future__ import annotations

from typing import Sequence

import numpy as np

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
    """One confusion matrix per background threshold, filled image by image."""

    def __init__(self, thresholds: Sequence[float], num_classes: int):
        self.thresholds = [float(t) for t in thresholds]
        self.cms = [ConfusionMatrix(num_classes) for _ in self.thresholds]

    def update(self, high_res: np.ndarray, keys: np.ndarray, gt: np.ndarray, name: str = "") -> None:
        for t, cm in zip(self.thresholds, self.cms):
            cm.update(cam_to_labels(high_res, keys, t), gt, name=name)

    def all_reduce(self) -> "ThresholdSweep":
        for cm in self.cms:
            cm.all_reduce()
        return self

    def table(self, class_names: Sequence[str]) -> list[dict]:
        return [{"threshold": t, **cm.scores(class_names)} for t, cm in zip(self.thresholds, self.cms)]
