"""The references' dense random walk (IRNet/BES ``propagate_to_edge``), for tests and benchmarks only.

It builds the (h·w)×(h·w) affinity densely, column-normalises a^β and squares it ``exp_times``
times: O(N³) time and O(N²) memory. It shares no code with the fast path
(:mod:`salmask.refine.random_walk`): its paths are built here from IRNet's ``PathIndex`` definition
(search directions in the lower half-plane, each affinity set for both ends), so it checks the fast
path's path set, shifting, neighbour bookkeeping, normalisation and stepping.
"""
from __future__ import annotations

import torch
from torch import Tensor


def search_paths(radius: int = 5) -> list[tuple[tuple[int, int], list[tuple[int, int]]]]:
    """IRNet's search directions and their paths (``PathIndex.get_search_paths_dst``).

    Directions: (0, x) for 0 < x < r, and (y, x) for 0 < y < r, |x| < r with x² + y² < r² (the other half
    of the disc is reached from the other end). The path of (dy, dx): the pixels (y, x) of the box spanned
    by (0, 0) and (dy, dx) whose squared distance to the line through them, (dy·x − dx·y)² / (dy² + dx²),
    is below 1.
    """
    dirs = [(0, x) for x in range(1, radius)]
    dirs += [(y, x) for y in range(1, radius) for x in range(1 - radius, radius) if x * x + y * y < radius**2]
    out = []
    for dy, dx in dirs:
        length_sq = dy * dy + dx * dx
        path = [(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
                if (dy * x - dx * y) ** 2 / length_sq < 1]
        out.append(((dy, dx), path))
    return out


def dense_affinity(boundary: Tensor, radius: int = 5) -> Tensor:
    """``boundary`` [h,w] → A [h·w, h·w]: A[i, j] = A[j, i] = 1 − max of the boundary over the path from i
    to j for pixels j = i + d, d a search direction, both inside the image; A[i, i] = 1; 0 elsewhere."""
    h, w = boundary.shape
    affinity = boundary.new_zeros(h, w, h, w)
    for (dy, dx), path in search_paths(radius):
        # sources (y, x) whose destination (y + dy, x + dx) lies inside the image
        y0, y1 = 0, h - dy
        x0, x1 = max(0, -dx), min(w, w - dx)
        if y0 >= y1 or x0 >= x1:
            continue
        path_max = torch.stack([boundary[y0 + py : y1 + py, x0 + px : x1 + px] for py, px in path]).amax(0)
        ys, xs = torch.meshgrid(
            torch.arange(y0, y1, device=boundary.device), torch.arange(x0, x1, device=boundary.device), indexing="ij"
        )
        affinity[ys, xs, ys + dy, xs + dx] = 1 - path_max
        affinity[ys + dy, xs + dx, ys, xs] = 1 - path_max
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
