"""Boundary-network losses (docs/method.md#boundary-network-and-loss): the SBE joint loss and the BES loss (ablation).

Each term is one sum over the whole batch divided by one pixel count for the whole batch (plus
one), not a mean of per-image terms — as in the BES and SBE releases (``step/train_bes.py``),
so images with many labelled pixels weigh more.
"""
from __future__ import annotations

import torch
from torch import Tensor

from salmask.boundary.labels import BG, BOUNDARY_FG_BG, BOUNDARY_FG_FG, CERTAIN_BOUNDARY, FG

MODES = ("sbe", "bes")
_EPS = 1e-4


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / (mask.sum() + 1)


def boundary_loss(prob: Tensor, labels: Tensor, saliency: Tensor | None,
                  mode: str = "sbe") -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of a boundary map against boundary label codes.

    With p clamped to [1e-4, 1−1e-4] and p̄ = p detached::

        L_bg = Σ_BG −log(1−p) / (N_BG + 1),   L_fg likewise on FG
        L_bd(S) = Σ −log(p)·√p̄·M·S / (Σ M·S + 1),  M = FG_FG ∪ FG_BG ∪ CERTAIN_BOUNDARY
        SBE: L = L_fg + L_bg + L_bd(saliency > 0) + L_bd(saliency == 0)
        BES: L = (L_fg + L_bg)/2 + L_bd(all)

    Args:
        prob: boundary probabilities (sigmoid output) [B,1,h,w] or [B,h,w].
        labels: uint8 label codes [B,h,w] (labels downsampled ×1/4 by nearest).
        saliency: saliency [B,h,w] at the labels' size; required for "sbe", unused for "bes".
        mode: "sbe" or "bes".

    Returns:
        (loss, parts): the scalar loss and its detached terms for logging — "fg", "bg" and
        "bd_sal", "bd_nonsal" (SBE) or "bd" (BES).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if prob.dim() == 4 and prob.shape[1] == 1:
        prob = prob[:, 0]
    if prob.dim() != 3:
        raise ValueError(f"prob must be [B,1,h,w] or [B,h,w], got {tuple(prob.shape)}")
    if labels.shape != prob.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} differs from prob shape {tuple(prob.shape)}")
    if mode == "sbe":
        if saliency is None:
            raise ValueError("mode 'sbe' needs a saliency map")
        if saliency.shape != prob.shape:
            raise ValueError(f"saliency shape {tuple(saliency.shape)} differs from prob shape "
                             f"{tuple(prob.shape)}")

    # float32: in half precision 1 − 1e-4 rounds to 1 and log(1 − p) becomes −inf.
    p = prob.float().clamp(_EPS, 1 - _EPS)
    labels = labels.to(p.device)
    neg_log_bg = -torch.log1p(-p)
    bd_term = -torch.log(p) * p.detach().sqrt()
    boundary = ((labels == BOUNDARY_FG_FG) | (labels == BOUNDARY_FG_BG)
                | (labels == CERTAIN_BOUNDARY)).float()

    parts = {"fg": _masked_mean(neg_log_bg, (labels == FG).float()),
             "bg": _masked_mean(neg_log_bg, (labels == BG).float())}
    if mode == "sbe":
        saliency = saliency.to(p.device)
        parts["bd_sal"] = _masked_mean(bd_term, boundary * (saliency > 0).float())
        parts["bd_nonsal"] = _masked_mean(bd_term, boundary * (saliency == 0).float())
        loss = parts["fg"] + parts["bg"] + parts["bd_sal"] + parts["bd_nonsal"]
    else:
        parts["bd"] = _masked_mean(bd_term, boundary)
        loss = (parts["fg"] + parts["bg"]) / 2 + parts["bd"]
    return loss, {k: v.detach() for k, v in parts.items()}
