"""The walk's background score chosen without ground truth (``walk.bg_score: auto``).

A pseudo mask is the argmax of [bg_score, walk scores]: a pixel is foreground when its best class score
exceeds the background score. The references fix that score on VOC's ground truth for their backbone and
data (SBE 0.21, IRNet/BES 0.25), and the best value moves with the backbone, the data and the boundary map
(on voc-real's training split a Lite0 run scored 37.1 mIoU at 0.21 and 47.3 at 0.5). A user with a new
dataset has no ground truth to tune it on; the pipeline already has an independent, label-free estimate of
where the objects are: the saliency map of a pretrained salient-object detector.

Criterion: over the whole pseudo split, the IoU between the pseudo masks' foreground {max_c score > t} and
the salient region {saliency > 0.5}, summed as one intersection over one union (large objects weigh as their
pixels), maximised over a grid of t. Too low a t floods the background and the union grows with it; too high a
t shrinks the objects and the intersection falls; the IoU peaks where the walk's foreground has the salient
region's extent and place. Saliency decides only *how much* is foreground; which class a foreground pixel
gets is still the walk's argmax, so saliency's lack of classes costs nothing here. Images without a class
(no foreground by construction) are left out. The walk runs once; each candidate t costs a comparison, and
all of them come from two cumulative histograms per run.
"""
from __future__ import annotations

import numpy as np

from salmask.utils import dist

GRID = tuple(round(0.05 + 0.01 * k, 2) for k in range(91))
"""Candidate background scores 0.05, 0.06, ..., 0.95 (scores are divided by their global maximum)."""
SALIENT = 0.5
"""A pixel is salient when its saliency is above this: SOD's usual binarisation of a map in [0, 1]."""


class SaliencyAgreement:
    """Pixel counts for :func:`choose`, filled image by image and summed across ranks.

    For each grid value t_j: ``inter[j]`` = #(max score > t_j and salient), ``fg[j]`` = #(max score > t_j),
    and ``salient`` = #salient pixels, over every image added.
    """

    def __init__(self, grid: tuple[float, ...] = GRID):
        self.grid = np.asarray(grid, np.float64)
        self.in_salient = np.zeros(len(grid) + 1, np.int64)  # pixels by how many grid values lie below their score
        self.outside = np.zeros(len(grid) + 1, np.int64)

    def update(self, scores: np.ndarray, saliency: np.ndarray) -> None:
        """``scores`` [K,H,W] walk scores (K ≥ 1), ``saliency`` [H,W] in [0,1]."""
        if scores.shape[0] == 0:
            return
        if scores.shape[1:] != saliency.shape:
            raise ValueError(f"scores {scores.shape[1:]} and saliency {saliency.shape} differ in size")
        best = scores.max(0).astype(np.float64)
        below = np.searchsorted(self.grid, best.ravel(), side="left")  # #grid values < score: fg for those
        salient = (saliency > SALIENT).ravel()
        n = len(self.grid) + 1
        self.in_salient += np.bincount(below[salient], minlength=n)
        self.outside += np.bincount(below[~salient], minlength=n)

    def all_reduce(self) -> "SaliencyAgreement":
        import torch

        both = dist.all_reduce_sum(torch.from_numpy(np.stack([self.in_salient, self.outside])))
        self.in_salient, self.outside = (a.numpy() for a in both)
        return self

    def curve(self) -> list[dict]:
        """[{score, iou}] for each grid value: IoU (%) of the foreground at that score with the salient region."""
        # fg at t_j: pixels with more than j grid values below their score
        inter = self.in_salient[::-1].cumsum()[::-1][1:]
        fg = inter + self.outside[::-1].cumsum()[::-1][1:]
        union = self.in_salient.sum() + fg - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        return [{"score": float(t), "iou": round(100 * float(v), 3)} for t, v in zip(self.grid, iou)]


def choose(agreement: SaliencyAgreement) -> tuple[float, list[dict]]:
    """The grid score of highest agreement (the lowest such score on a tie) and the whole curve."""
    curve = agreement.curve()
    best = max(range(len(curve)), key=lambda j: (curve[j]["iou"], -j))
    return curve[best]["score"], curve
