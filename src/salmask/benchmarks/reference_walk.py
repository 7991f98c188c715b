"""The references' dense random walk (IRNet/BES ``propagate_to_edge``), for tests and benchmarks only.

It builds the (h·w)×(h·w) affinity densely, column-normalises a^β and squares it ``exp_times``
times: O(N³) time and O(N²) memory. It shares only the path definition
(:func:`salmask.refine.random_walk.neighbour_paths`) with the fast path, so it checks the fast
path's shifting, neighbour bookkeeping, normalisation and stepping.
"""
from __future__ import annotations

import torch
from torch import Tensor

from salmask.refine.random_walk import neighbour_paths


def dense_affinity(boundary: Tensor, radius: int = 5) -> Tensor:
    """``boundary`` [h,w] → A [h·w, h·w]: A[i, j] = 1 − max of the boundary over the path from i
    to j for neighbours j of i inside the image, A[i, i] = 1, 0 elsewhere."""
    h, w = boundary.shape
    affinity = boundary.new_zeros(h, w, h, w)
    for (dy, dx), path in neighbour_paths(radius):
        # sources (y, x) whose neighbour (y + dy, x + dx) lies inside the image
        y0, y1 = max(0, -dy), min(h, h - dy)
        x0, x1 = max(0, -dx), min(w, w - dx)
        if not path or y0 >= y1 or x0 >= x1:
            continue
        path_max = torch.stack([boundary[y0 + py : y1 + py, x0 + px : x1 + px] for py, px in path]).amax(0)
        ys, xs = torch.meshgrid(
            torch.arange(y0, y1, device=boundary.device), torch.arange(x0, x1, device=boundary.device), indexing="ij"
        )
        affinity[ys, xs, ys + dy, xs + dx] = 1 - path_max
    affinity = affinity.reshape(h * w, h * w)
    affinity.fill_diagonal_(1.0)
    return affinity


def dense_propagate(
    cams: Tensor, boundary: Tensor, *, beta: float = 5.0, exp_times: int = 8, radius: int = 5
) -> Tensor:
    """``cams`` [C,h,w], ``boundary`` [h,w] → (cams ⊙ (1 − B)) · T^(2^exp_times) [C,h,w], computed
    in the dtype of ``cams`` with T dense and squared ``exp_times`` times."""
    channels, h, w = cams.shape
    boundary = boundary.to(cams)
    scaled = dense_affinity(boundary, radius).pow(beta)
    transition = scaled / scaled.sum(0, keepdim=True)
    del scaled
    for _ in range(exp_times):
        transition = transition @ transition
    walked = (cams * (1 - boundary)).reshape(channels, h * w) @ transition
    return walked.reshape(channels, h, w)
