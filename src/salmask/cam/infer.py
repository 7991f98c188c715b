"""Multi-scale, flip-averaged CAM inference (SPEC §2), batched over same-size images.

For each scale s the batch holds every image of a size group and its mirror; the stride-16 CAMs are
upsampled bilinearly to the stride-4 grid ("cam", for the walk) and to the image ("high_res"), summed over
scales and flips, kept for the positive classes, and divided by each class's maximum. Stored per image
as ``{id}.npz``: ``keys`` int16 [K] (class ids 1..C), ``cam`` float16 [K,ceil(H/4),ceil(W/4)],
``high_res`` float16 [K,H,W].
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from salmask.data.transforms import to_tensor
from salmask.models.cam_net import CAMNet
from salmask.utils.train import autocast


def strided_size(h: int, w: int, stride: int) -> tuple[int, int]:
    return math.ceil(h / stride), math.ceil(w / stride)


@torch.no_grad()
def multiscale_cams(model: CAMNet, images: torch.Tensor, scales: Sequence[float], *,
                    amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` [B,3,H,W] normalised, one size -> (cam [B,C,ceil(H/4),ceil(W/4)], high_res [B,C,H,W]),
    summed over scales and flips, not yet normalised."""
    b, _, h, w = images.shape
    device = images.device
    s4 = strided_size(h, w, 4)
    up16 = (math.ceil(h / 16) * 16, math.ceil(w / 16) * 16)
    cam_sum = high_sum = None
    both = torch.cat([images, images.flip(-1)])
    if device.type == "cuda":
        both = both.contiguous(memory_format=torch.channels_last)
    for s in scales:
        x = both if s == 1.0 else F.interpolate(both, (round(h * s), round(w * s)), mode="bilinear",
                                                align_corners=False)
        with autocast(device, amp):
            out = model.cams(x)
        out = out.float()
        out = out[:b] + out[b:].flip(-1)
        cam = F.interpolate(out, s4, mode="bilinear", align_corners=False)
        high = F.interpolate(out, up16, mode="bilinear", align_corners=False)[..., :h, :w]
        cam_sum = cam if cam_sum is None else cam_sum + cam
        high_sum = high if high_sum is None else high_sum + high
    return cam_sum, high_sum


def normalise_positive(cams: torch.Tensor, keys: Sequence[int]) -> torch.Tensor:
    """[C,h,w] -> [K,h,w] for the positive classes (ids 1..C), each divided by its max (+1e-5)."""
    idx = torch.as_tensor([k - 1 for k in keys], dtype=torch.long, device=cams.device)
    sel = cams.index_select(0, idx)
    return sel / (sel.flatten(1).max(1).values[:, None, None] + 1e-5)


def group_by_size(sizes: dict[str, tuple[int, int]], batch: int) -> list[list[str]]:
    """Batches of ids that share one (H, W), in input order within each size."""
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for i, hw in sizes.items():
        groups[hw].append(i)
    return [ids[j:j + batch] for ids in groups.values() for j in range(0, len(ids), batch)]


def cams_for_batch(model: CAMNet, arrays: list[np.ndarray], labels: list[list[int]], scales: Sequence[float],
                   device: torch.device, amp: bool) -> list[dict[str, np.ndarray]]:
    """Same-size uint8 images [H,W,3] and their positive class ids -> one artefact dict per image."""
    x = torch.stack([to_tensor(a) for a in arrays]).to(device, non_blocking=True)
    cam, high = multiscale_cams(model, x, scales, amp=amp)
    out = []
    for j, keys in enumerate(labels):
        out.append({
            "keys": np.asarray(keys, dtype=np.int16),
            "cam": normalise_positive(cam[j], keys).cpu().numpy().astype(np.float16),
            "high_res": normalise_positive(high[j], keys).cpu().numpy().astype(np.float16),
        })
    return out


def cams_one_by_one(model: CAMNet, image: np.ndarray, keys: list[int], scales: Sequence[float],
                    device: torch.device) -> dict[str, np.ndarray]:
    """The reference formulation (IRNet): one image, one scale at a time. Used by tests and benchmarks."""
    x = to_tensor(image)[None].to(device)
    h, w = image.shape[:2]
    s4 = strided_size(h, w, 4)
    up16 = (math.ceil(h / 16) * 16, math.ceil(w / 16) * 16)
    cams, highs = [], []
    with torch.no_grad():
        for s in scales:
            xs = F.interpolate(x, (round(h * s), round(w * s)), mode="bilinear", align_corners=False) \
                if s != 1.0 else x
            o = model.cams(torch.cat([xs, xs.flip(-1)]))
            o = o[:1] + o[1:].flip(-1)
            cams.append(F.interpolate(o, s4, mode="bilinear", align_corners=False)[0])
            highs.append(F.interpolate(o, up16, mode="bilinear", align_corners=False)[0, :, :h, :w])
    return {"keys": np.asarray(keys, dtype=np.int16),
            "cam": normalise_positive(torch.stack(cams).sum(0), keys).cpu().numpy().astype(np.float16),
            "high_res": normalise_positive(torch.stack(highs).sum(0), keys).cpu().numpy().astype(np.float16)}
