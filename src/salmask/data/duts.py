"""Salient-object datasets in the DUTS layout: ``root/Images/*.jpg|png`` with ``root/Masks/<stem>.png``."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from salmask.errors import InputError
from salmask.io import read_gray, read_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """RGB uint8 [H,W,3] → bilinearly resized, ImageNet-normalised float32 [3,size,size]."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H,W,3], got {image.dtype} {list(image.shape)}")
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    normalised = (resized - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(normalised.transpose(2, 0, 1).copy())


def list_duts_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths paired by file stem, sorted by stem; an image without a mask is an InputError."""
    root = Path(root)
    images_dir, masks_dir = root / "Images", root / "Masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise InputError(d, "folder not found (expected the DUTS layout root/Images, root/Masks)")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise InputError(images_dir, "no .jpg/.png images")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})[:5]
        raise InputError(images_dir, f"several images share the stems {dup}")
    pairs = []
    for image in images:
        mask = masks_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise InputError(image, f"no mask {mask}")
        pairs.append((image, mask))
    return pairs


class DUTSFolder(Dataset):
    """A DUTS-layout folder as (image [3,S,S] normalised float32, mask [1,S,S] float32 in {0,1}) pairs.

    Masks are resized bilinearly and binarised at 0.5. ``train=True`` adds a random horizontal flip
    (drawn from torch's RNG, so it follows ``torch.manual_seed`` and DataLoader worker seeding).
    """

    def __init__(self, root: str | Path, img_size: int, *, train: bool = False):
        self.root = Path(root)
        self.img_size = img_size
        self.train = train
        self.pairs = list_duts_pairs(self.root)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path)
        mask = read_gray(mask_path)
        if mask.shape != image.shape[:2]:
            raise InputError(mask_path, f"mask size {mask.shape[::-1]} differs from its image's "
                                        f"{image.shape[1::-1]}")
        size = self.img_size
        x = image_to_tensor(image, size)
        m = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR) >= 0.5
        y = torch.from_numpy(m.astype(np.float32))[None]
        if self.train and torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x, y
