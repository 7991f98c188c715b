"""Random walk of CAMs bounded by a boundary map (docs/method.md#random-walk), in time and memory linear in the pixels.

The references (IRNet, BES) build the (h·w)×(h·w) transition matrix T densely and square it
``exp_times`` times: O(N³) time, O(N²) memory. T has only K = |{dy²+dx² < r²}| (69 for r = 5)
non-zeros per column, so here it is stored sparse (CSR, K·N entries) and applied 2**exp_times
times, which gives the same numbers at O(N·K) per step.
"""
from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from salmask.errors import ArgumentError

Offset = tuple[int, int]


@functools.lru_cache(maxsize=None)
def neighbour_paths(radius: int) -> tuple[tuple[Offset, tuple[Offset, ...]], ...]:
    """The neighbourhood of a pixel and the straight path to each neighbour.

    Returns one ``(offset, path)`` pair per offset (dy, dx) with dy² + dx² < radius², (0, 0)
    included, in row-major order. The path to (dy, dx) is IRNet's: every pixel (py, px) of the
    box spanned by (0, 0) and (dy, dx) closer than one pixel to the line through them,
    (dy·px − dx·py)² < dy² + dx²; both end pixels belong to it. The path of (0, 0) is empty
    (a_ii = 1). The set is symmetric about its midpoint, so the path from i to j and the path
    from j to i cover the same pixels and affinities are symmetric, a_ij = a_ji.
    """
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise ArgumentError(f"radius must be an integer >= 1, got {radius!r}")
    result = []
    for dy in range(1 - radius, radius):
        for dx in range(1 - radius, radius):
            length_sq = dy * dy + dx * dx
            if length_sq >= radius * radius:
                continue
            path = tuple(
                (py, px)
                for py in range(min(0, dy), max(0, dy) + 1)
                for px in range(min(0, dx), max(0, dx) + 1)
                if length_sq and (dy * px - dx * py) ** 2 < length_sq
            )
            result.append(((dy, dx), path))
    return tuple(result)


def affinities(boundary: Tensor, radius: int = 5) -> Tensor:
    """Affinity of every pixel with each of its neighbours.

    ``boundary`` [h,w] in [0,1]. Returns a [K,h,w] with a[k, y, x] = 1 − max of the boundary
    over the path from (y, x) to (y, x) + offset k (offsets as in :func:`neighbour_paths`),
    a = 1 for the offset (0, 0), and a = 0 where the neighbour lies outside the image.
    """
    h, w = boundary.shape
    r = radius - 1
    # Outside pixels count as full boundary (IRNet pads the edge map with 1), which cuts every
    # neighbour outside the image: its own pixel is on the path.
    padded = F.pad(boundary[None, None], (r, r, r, r), value=1.0)[0, 0]

    def shifted(py: int, px: int) -> Tensor:
        return padded[r + py : r + py + h, r + px : r + px + w]

    rows = [
        1 - torch.stack([shifted(py, px) for py, px in path]).amax(0) if path else torch.ones_like(boundary)
        for _, path in neighbour_paths(radius)
    ]
    return torch.stack(rows)


def transition_operator(boundary: Tensor, *, beta: float = 5.0, radius: int = 5) -> Tensor:
    """The walk's transition matrix, transposed and sparse.

    ``boundary`` [h,w] in [0,1]. Returns M, a sparse CSR tensor [h·w, h·w] in float64 with
    M[j, i] = T[i, j] = a_ij^β / Σ_i' a_i'j^β (T is column-normalised) and at most K entries per
    row, so that one step of the walk, x ↦ x·T for x [C, h·w], is (M @ xᵀ)ᵀ.
    """
    h, w = boundary.shape
    device = boundary.device
    weight = affinities(boundary.to(torch.float64), radius).pow(beta).reshape(-1, h * w)
    # T[j+d, j] = a(j+d, j)^β = a(j, j+d)^β by symmetry, so column j of T is column j of `weight`.
    weight = weight / weight.sum(0)

    offsets = torch.tensor([offset for offset, _ in neighbour_paths(radius)], dtype=torch.int32, device=device)
    ys = torch.arange(h, dtype=torch.int32, device=device).repeat_interleave(w)[:, None]
    xs = torch.arange(w, dtype=torch.int32, device=device).repeat(h)[:, None]
    inside = (  # [N, K]: neighbour k of pixel j lies in the image
        (ys + offsets[:, 0] >= 0) & (ys + offsets[:, 0] < h) & (xs + offsets[:, 1] >= 0) & (xs + offsets[:, 1] < w)
    )
    # Offsets are in row-major order, so each row's column indices come out sorted, as CSR needs.
    pixel = torch.arange(h * w, dtype=torch.int32, device=device)[:, None]
    columns = (pixel + offsets[:, 0] * w + offsets[:, 1])[inside]
    row_starts = F.pad(inside.sum(1, dtype=torch.int32).cumsum(0, dtype=torch.int32), (1, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta state"
        return torch.sparse_csr_tensor(
            row_starts, columns, weight.t()[inside], (h * w, h * w), check_invariants=False
        )


def propagate(
    cams: Tensor, boundary: Tensor, *, beta: float = 5.0, exp_times: int = 8, radius: int = 5
) -> Tensor:
    """Random walk of CAMs inside a boundary map: (cams ⊙ (1 − B)) · T^(2^exp_times).

    ``cams`` [C,h,w] on the stride-4 grid, ``boundary`` [h,w] in [0,1] on the same grid.
    T is the column-normalised a^β of :func:`transition_operator`; the walk is 2**exp_times
    sparse steps of O(h·w·K) each. Returns [C,h,w] in the dtype of ``cams`` (not yet upsampled).

    The steps accumulate in float64: in float32 the 256 steps drift by ~3e-4 of the maximum on
    random inputs (the dense squaring, 8 products, by ~2e-5), and the step is bound by memory
    traffic and index reads, not arithmetic, so float64 costs little.
    """
    _check_inputs(cams, boundary, beta, exp_times, radius)
    channels, h, w = cams.shape
    boundary = boundary.to(cams.device)
    operator = transition_operator(boundary, beta=beta, radius=radius)
    state = (cams * (1 - boundary)).to(torch.float64).reshape(channels, h * w).t().contiguous()
    for _ in range(2**exp_times):
        state = operator @ state
    return state.t().reshape(channels, h, w).to(cams.dtype)


def _check_inputs(cams: Tensor, boundary: Tensor, beta: float, exp_times: int, radius: int) -> None:
    if not isinstance(cams, Tensor) or cams.ndim != 3 or 0 in cams.shape:
        raise ArgumentError(f"cams must be a non-empty [C,h,w] tensor, got {_describe(cams)}")
    if not isinstance(boundary, Tensor) or tuple(boundary.shape) != tuple(cams.shape[1:]):
        raise ArgumentError(f"boundary must be a [h,w] = {list(cams.shape[1:])} tensor, got {_describe(boundary)}")
    for name, tensor in (("cams", cams), ("boundary", boundary)):
        if not tensor.is_floating_point():
            raise ArgumentError(f"{name} must be floating point, got {tensor.dtype}")
        if not bool(torch.isfinite(tensor).all()):
            raise ArgumentError(f"{name} contains NaN or infinite values")
    if bool((boundary < 0).any()) or bool((boundary > 1).any()):
        raise ArgumentError(
            f"boundary must lie in [0, 1], got values in [{float(boundary.min())}, {float(boundary.max())}]"
        )
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ArgumentError(f"beta must be a finite number > 0, got {beta!r}")
    if isinstance(exp_times, bool) or not isinstance(exp_times, int) or exp_times < 0:
        raise ArgumentError(f"exp_times must be an integer >= 0, got {exp_times!r}")
    neighbour_paths(radius)  # validates radius


def _describe(value: object) -> str:
    return f"shape {list(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
