"""Augmentations shared by the training stages, in numpy on HWC uint8 images.

Masks (labels, boundary codes) use nearest resampling; images and soft maps bilinear. Crops pad images
with the ImageNet mean's zero (after normalisation) and masks with the ignore value, as IRNet does.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def sample_rng(index: int) -> np.random.Generator:
    """Augmentation randomness for sample ``index``, drawn from torch's RNG (seeded from the run's seed in
    the main process and per loader worker), so the same seed and ``num_workers`` give the same run."""
    return np.random.default_rng((index, int(torch.randint(0, 2**31, ()).item())))


def normalize(img: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3] -> float32 [H,W,3] ImageNet-normalised."""
    return (img.astype(np.float32) / 255.0 - MEAN) / STD


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 [H,W,3] -> normalised float32 [3,H,W]."""
    return torch.from_numpy(normalize(img).transpose(2, 0, 1).copy())


def resize(arr: np.ndarray, size_hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    h, w = size_hw
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(arr, (max(1, w), max(1, h)), interpolation=interp)


def downsample_labels(labels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 label map [H,W] -> [h,w] by PIL's nearest neighbour, which samples each output cell's centre
    (pixel 4i+2 at a factor of 4, as the reference's ``pil_rescale(label, 0.25, 0)``); cv2's nearest takes
    the cell's first pixel (4i), half a cell off."""
    h, w = size_hw
    return np.asarray(Image.fromarray(np.ascontiguousarray(labels)).resize((w, h), Image.NEAREST))


def random_scale(rng: np.random.Generator, img: np.ndarray, others: list[tuple[np.ndarray, bool]],
                 low: float, high: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rescale by a factor in [low, high]; ``others`` are (array, is_label) pairs sharing the geometry."""
    s = rng.uniform(low, high)
    hw = (round(img.shape[0] * s), round(img.shape[1] * s))
    return resize(img, hw), [resize(a, hw, nearest=lab) for a, lab in others]


def random_resize_long(rng: np.random.Generator, img: np.ndarray, others: list[tuple[np.ndarray, bool]],
                       low: int, high: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resize so the long side is uniform in [low, high] (IRNet's random_resize_long)."""
    target = int(rng.integers(low, high + 1))
    s = target / max(img.shape[:2])
    hw = (round(img.shape[0] * s), round(img.shape[1] * s))
    return resize(img, hw), [resize(a, hw, nearest=lab) for a, lab in others]


def random_flip(rng: np.random.Generator, arrays: list[np.ndarray]) -> list[np.ndarray]:
    if rng.random() < 0.5:
        return [np.ascontiguousarray(a[:, ::-1]) for a in arrays]
    return arrays


def random_crop(rng: np.random.Generator, size: int, arrays: list[tuple[np.ndarray, float]]) -> list[np.ndarray]:
    """Crop (padding first where smaller) every array at the same window; pairs are (array, pad value)."""
    h, w = arrays[0][0].shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    top = int(rng.integers(0, h + ph - size + 1))
    left = int(rng.integers(0, w + pw - size + 1))
    oy, ox = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
    out = []
    for a, fill in arrays:
        canvas = np.full((h + ph, w + pw) + a.shape[2:], fill, dtype=a.dtype)
        canvas[oy:oy + h, ox:ox + w] = a
        out.append(canvas[top:top + size, left:left + size])
    return out
