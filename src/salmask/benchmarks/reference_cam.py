"""IRNet's ``make_cam`` (``step/make_cam.py`` on ``voc12.dataloader.VOC12ClassificationDatasetMSF``), for
tests and benchmarks only.

Written from IRNet's definitions, not from :mod:`salmask.cam.infer`, whose helpers it does not import:

* rescale (``imutils.pil_rescale``, order 3): PIL bicubic of the uint8 image to (round(H·s), round(W·s)),
  the image itself at scale 1;
* normalise (``TorchvisionNormalize``): x / 255 in float64, minus the ImageNet mean, over its std, as float32;
* one image and its mirror per forward, one scale at a time; CAM = ReLU(conv2d(features, classifier weight)),
  the mirror's flipped back and added (``CAM.forward``);
* per scale, bilinear (half-pixel) to the stride-4 size ⌈H/4⌉×⌈W/4⌉ (``get_strided_size``) and to the
  stride-16 size rounded up, 16·⌈H/16⌉×16·⌈W/16⌉ (``get_strided_up_size``), summed over scales, the latter
  cropped to H×W;
* the positive classes kept, each divided by its maximum + 1e-5 (``adaptive_max_pool2d``).

It shares with salmask only the network it is given: ``model.features`` (the backbone, which
``tests/test_reference_nets.py`` checks against a hand-built ResNet) and ``model.classifier.weight``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pil_rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """uint8 [H,W,3] → uint8 [round(H·s), round(W·s), 3], PIL bicubic; unchanged when the size is."""
    h, w = image.shape[:2]
    th, tw = int(np.round(h * scale)), int(np.round(w * scale))
    if (th, tw) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((tw, th), Image.BICUBIC))


def torchvision_normalize(image: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3] → float32 [H,W,3]: per channel (x / 255 − mean) / std, computed in float64."""
    out = np.empty(image.shape, np.float32)
    for c in range(3):
        out[..., c] = (image[..., c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    return out


@torch.no_grad()
def irnet_make_cam(model: torch.nn.Module, image: np.ndarray, keys: Sequence[int], scales: Sequence[float],
                   device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """One uint8 image [H,W,3] and its class ids ``keys`` (1..C; CAM channel k − 1) → ``keys`` int [K],
    ``cam`` float32 [K,⌈H/4⌉,⌈W/4⌉] and ``high_res`` float32 [K,H,W], each class in [0, 1)."""
    h, w = image.shape[:2]
    strided = ((h - 1) // 4 + 1, (w - 1) // 4 + 1)
    strided_up = (((h - 1) // 16 + 1) * 16, ((w - 1) // 16 + 1) * 16)
    outputs = []
    for s in scales:
        x = torchvision_normalize(pil_rescale(image, s)).transpose(2, 0, 1)
        pair = torch.from_numpy(np.stack([x, np.flip(x, -1)]).copy()).to(device)
        cam = F.relu(F.conv2d(model.features(pair), model.classifier.weight)).float()
        outputs.append(cam[0] + cam[1].flip(-1))
    strided_cam = torch.stack([F.interpolate(o[None], strided, mode="bilinear", align_corners=False)[0]
                               for o in outputs]).sum(0)
    highres_cam = torch.stack([F.interpolate(o[:, None], strided_up, mode="bilinear", align_corners=False)
                               for o in outputs]).sum(0)[:, 0, :h, :w]
    valid_cat = torch.as_tensor([k - 1 for k in keys], dtype=torch.long, device=strided_cam.device)
    strided_cam = strided_cam[valid_cat]
    strided_cam /= F.adaptive_max_pool2d(strided_cam, (1, 1)) + 1e-5
    highres_cam = highres_cam[valid_cat]
    highres_cam /= F.adaptive_max_pool2d(highres_cam, (1, 1)) + 1e-5
    return {"keys": np.asarray(keys), "cam": strided_cam.cpu().numpy(), "high_res": highres_cam.cpu().numpy()}
