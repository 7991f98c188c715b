"""Multi-scale, flip-averaged CAM inference (docs/method.md#cam-classifier), batched over same-size images.

For each scale s the batch holds every image of a size group and its mirror, rescaled as uint8 with PIL
bicubic and then normalised (IRNet's order); the stride-16 CAMs are
upsampled bilinearly to the stride-4 grid ("cam", for the walk) and to the image ("high_res"), summed over
scales and flips, kept for the positive classes, and divided by each class's maximum. Stored per image
as ``{id}.npz``: ``keys`` int16 [K] (class ids 1..C), ``cam`` float16 [K,ceil(H/4),ceil(W/4)],
``high_res`` float16 [K,H,W].
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from salmask.data.transforms import to_tensor
from salmask.models.cam_net import CAMNet
from salmask.utils.train import autocast


def strided_size(h: int, w: int, stride: int) -> tuple[int, int]:
    return math.ceil(h / stride), math.ceil(w / stride)


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """uint8 [H,W,3] -> uint8 [round(H·s),round(W·s),3] with PIL bicubic (IRNet's ``pil_rescale``)."""
    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BICUBIC))


def scaled_inputs(arrays: Sequence[np.ndarray], scales: Sequence[float], device: torch.device) -> list[torch.Tensor]:
    """Same-size uint8 images [H,W,3] -> per scale a normalised batch [B,3,round(H·s),round(W·s)]: each
    image rescaled as uint8, then normalised (the reference's order)."""
    return [torch.stack([to_tensor(rescale(a, s)) for a in arrays]).to(device, non_blocking=True) for s in scales]


@torch.no_grad()
def multiscale_cams(model: CAMNet, inputs: Sequence[torch.Tensor], size: tuple[int, int], *,
                    amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``inputs``: one normalised batch [B,3,h_s,w_s] per scale of images of ``size`` (H, W) (see
    :func:`scaled_inputs`) -> (cam [B,C,ceil(H/4),ceil(W/4)], high_res [B,C,H,W]), summed over scales and
    flips, not yet normalised."""
    h, w = size
    s4 = strided_size(h, w, 4)
    up16 = (math.ceil(h / 16) * 16, math.ceil(w / 16) * 16)
    cam_sum = high_sum = None
    for x in inputs:
        b = x.shape[0]
        both = torch.cat([x, x.flip(-1)])
        if both.device.type == "cuda":
            both = both.contiguous(memory_format=torch.channels_last)
        with autocast(both.device, amp):
            out = model.cams(both)
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


def cams_for_batch(model: CAMNet, arrays: list[np.ndarray], labels: list[list[int]], scales: Sequence[float],
                   device: torch.device, amp: bool) -> list[dict[str, np.ndarray]]:
    """Same-size uint8 images [H,W,3] and their positive class ids -> one artefact dict per image."""
    cam, high = multiscale_cams(model, scaled_inputs(arrays, scales, device), arrays[0].shape[:2], amp=amp)
    out = []
    for j, keys in enumerate(labels):
        out.append({
            "keys": np.asarray(keys, dtype=np.int16),
            "cam": normalise_positive(cam[j], keys).cpu().numpy().astype(np.float16),
            "high_res": normalise_positive(high[j], keys).cpu().numpy().astype(np.float16),
        })
    return out
