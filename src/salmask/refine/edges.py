"""Boundary evidence for the walk (``walk.boundary``): the learned boundary map, saliency edges, or both.

The walk stops where the boundary map is high. A boundary network trained on a few hundred images is weak
evidence, while a pretrained salient-object map already outlines the objects sharply; its edges need no
training at all.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from salmask.errors import ConfigError

SOURCES = ("learned", "saliency", "both")


def saliency_edges(saliency: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Edges of a saliency map on the walk's grid.

    ``saliency`` float [H,W] in [0,1]; ``grid`` (h, w), the stride-4 grid (⌈H/4⌉, ⌈W/4⌉). The map is resized
    (bilinear) to the grid and its morphological gradient taken: max − min over each 3×3 neighbourhood
    (edge-replicated at the border), which is in [0,1] with no scale to tune, 1 across a sharp object outline
    and 0 inside flat regions. Returns float32 [h,w].
    """
    s = torch.from_numpy(np.ascontiguousarray(saliency, np.float32))[None, None]
    s = F.interpolate(s, size=tuple(grid), mode="bilinear", align_corners=False)
    padded = F.pad(s, (1, 1, 1, 1), mode="replicate")
    grad = F.max_pool2d(padded, 3, stride=1) + F.max_pool2d(-padded, 3, stride=1)
    return grad[0, 0].clamp_(0, 1).numpy()


def walk_boundary(source: str, learned: np.ndarray | None, saliency: np.ndarray | None,
                  grid: tuple[int, int]) -> np.ndarray:
    """The boundary map the walk uses, float32 [h,w] in [0,1], from ``walk.boundary``.

    ``learned`` [h,w]: the boundary network's map (for ``learned`` and ``both``); ``saliency`` [H,W]: the
    saliency map (for ``saliency`` and ``both``). ``both`` is their pixel-wise maximum: an edge of either
    stops the walk.
    """
    if source not in SOURCES:
        raise ConfigError(f"walk.boundary must be one of {', '.join(SOURCES)}, got {source!r}")
    maps = []
    if source in ("learned", "both"):
        maps.append(np.clip(np.asarray(learned, np.float32), 0, 1))
    if source in ("saliency", "both"):
        maps.append(saliency_edges(saliency, grid))
    return maps[0] if len(maps) == 1 else np.maximum(*maps)
