"""The references' post-processing of the random walk (IRNet/BES ``make_sem_seg_labels``), shared by the
``make_pseudo`` stage and the library's :func:`salmask.pseudo_masks`.

The walked stride-4 scores are upsampled ×4 (bilinear, half-pixel centres), cropped to the image, divided
by their global maximum; a constant background score is put in front and the argmax over
[background, *keys] gives the class ids.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from salmask.cam.evaluate import class_lut, scores_to_index
from salmask.refine.random_walk import propagate


def upsample_scores(walked: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Walked scores [K,h,w] on the stride-4 grid -> float32 [K,H,W] in [0,1]: ×4 bilinear, cropped to
    ``size`` (H, W), divided by the global maximum (at least 1e-5, so all-zero scores stay zero)."""
    up = F.interpolate(walked[None].float(), scale_factor=4, mode="bilinear", align_corners=False)
    up = up[0, :, : size[0], : size[1]]
    return (up / up.max().clamp_min(1e-5)).cpu().numpy()


def walk_scores(cams: np.ndarray, boundary: np.ndarray, size: tuple[int, int], *, beta: float,
                exp_times: int, radius: int, device: torch.device | str = "cpu") -> np.ndarray:
    """Stride-4 CAMs [K,h,w] + boundary [h,w] -> walk scores float32 [K,H,W] in [0,1] (see the module).

    The boundary is clipped to [0,1] (stored float16 maps may overshoot by a rounding step). K = 0 gives
    an empty [0,H,W].
    """
    if cams.shape[0] == 0:
        return np.zeros((0, *size), np.float32)
    cams_t = torch.from_numpy(np.asarray(cams, dtype=np.float32)).to(device)
    edge = torch.from_numpy(np.asarray(boundary, dtype=np.float32)).to(device).clamp_(0, 1)
    walked = propagate(cams_t, edge, beta=beta, exp_times=exp_times, radius=radius)
    return upsample_scores(walked, size)


def scores_to_mask(scores: np.ndarray, keys: np.ndarray, bg_score: float) -> np.ndarray:
    """Scores [K,H,W] of the classes ``keys`` [K] -> uint8 [H,W] class ids: argmax over
    [``bg_score``, *scores], background 0 where every score is below ``bg_score``."""
    return class_lut(np.asarray(keys))[scores_to_index(scores, bg_score)]
