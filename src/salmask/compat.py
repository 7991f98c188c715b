"""Drop-ins for the field's own code: the references' random walk without the dense matrix.

IRNet (``misc/indexing.py``), and BES and SBE after it, build the (h·w)×(h·w) transition matrix densely
and square it ``exp_times`` times: about 4 matrices of (h·w)² float32 live at once, 2.2 GB for one VOC
image at stride 4 (94×125), O((h·w)³) time. :func:`propagate_to_edge` has their signature and shapes
and returns the same numbers from salmask's sparse walk (:func:`salmask.refine.random_walk.propagate`),
in memory linear in h·w. In ``step/make_sem_seg_labels.py`` replace::

    rw = indexing.propagate_to_edge(cam_downsized_values, edge, beta=args.beta, exp_times=args.exp_times, radius=5)

by::

    rw = salmask.compat.propagate_to_edge(cam_downsized_values, edge, beta=args.beta, exp_times=args.exp_times, radius=5)

(after ``import salmask.compat``); everything around it stays as it is.
"""
from __future__ import annotations

import torch
from torch import Tensor

from salmask.errors import ArgumentError
from salmask.refine.random_walk import propagate

__all__ = ["propagate_to_edge"]


def propagate_to_edge(x: Tensor, edge: Tensor, radius: int = 5, beta: float = 10, exp_times: int = 8) -> Tensor:
    """IRNet's ``indexing.propagate_to_edge``: the random walk of ``x`` bounded by ``edge``, sparse.

    Computes ``(x ⊙ (1 − edge)) · T^(2^exp_times)`` with T the column-normalised ``a^beta``, a_ij = 1 − the
    edge's maximum on the segment between pixels i and j closer than ``radius`` (a_ii = 1, pixels outside
    the map cut off), exactly IRNet's definition, without normalising anything else. The steps run in
    float64 on ``x``'s device (CPU or CUDA) in O(h·w·radius²) memory.

    Args:
        x: CAMs [C,h,w] (any [..., h, w] is flattened to [C,h,w] as IRNet's ``x.view(-1, h, w)``), float.
        edge: the boundary map [1,h,w] (or [h,w]) in [0,1], as IRNet's ``EdgeDisplacement`` returns it.
        radius: neighbourhood radius (integer >= 1); beta: affinity exponent > 0; exp_times: log2 of the
            number of steps (integer >= 0).

    Returns:
        [C,1,h,w] in ``x``'s dtype and device: IRNet's output shape, which ``make_sem_seg_labels.py``
        upsamples with ``F.interpolate(rw, scale_factor=4)[..., 0, :H, :W]``.
    """
    if not isinstance(x, Tensor) or x.ndim < 2 or x.numel() == 0:
        raise ArgumentError(f"x must be a non-empty [C,h,w] tensor, got {_describe(x)}")
    height, width = x.shape[-2:]
    if (not isinstance(edge, Tensor) or edge.ndim < 2 or tuple(edge.shape[-2:]) != (height, width)
            or edge.numel() != height * width):
        raise ArgumentError(f"edge must be a [1,{height},{width}] tensor matching x's last two dims, "
                            f"got {_describe(edge)}")
    if not x.is_floating_point() or not edge.is_floating_point():
        raise ArgumentError(f"x and edge must be floating point, got {x.dtype} and {edge.dtype}")
    if not bool(torch.isfinite(edge).all()) or bool((edge < 0).any()) or bool((edge > 1).any()):
        raise ArgumentError("edge must be finite and lie in [0, 1] (a sigmoid output)")
    if not bool(torch.isfinite(x).all()):
        raise ArgumentError("x contains NaN or infinite values")
    cams = x.reshape(-1, height, width)
    walked = propagate(cams, edge.reshape(height, width), beta=beta, exp_times=exp_times, radius=radius)
    return walked.reshape(walked.shape[0], 1, height, width)


def _describe(value: object) -> str:
    return f"shape {list(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
