"""Training the RGB-SOD network on a DUTS-layout folder, and predicting saliency maps with it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from salmask.data.duts import DUTSFolder, image_to_tensor
from salmask.errors import ConfigError
from salmask.models.rgbsod import RGBSOD, sod_loss
from salmask.utils.train import fit


def train_rgbsod(model: RGBSOD, root: str | Path, *, epochs: int, batch_size: int, lr: float, lr_step: int,
                 lr_gamma: float = 0.5, img_size: int, device: str | torch.device, out_dir: Path,
                 num_workers: int = 0, seed: int = 0, amp: bool = False, tensorboard: bool = False) -> list[dict]:
    """Train ``model`` in place with Adam and a step schedule (lr × lr_gamma every ``lr_step`` epochs),
    resumably, on the shared training loop (:func:`salmask.utils.train.fit`: ``out_dir/last.pt`` every epoch,
    a rerun resumes there and ends with the weights of an uninterrupted run).

    The seed's recipe: Swin-B 224, 150 epochs, lr 1e-4 halved every 15 epochs, batch 16. Shuffling, flips
    and dropout follow ``seed`` (bit-identical reruns on CPU). Returns one record per step: {"step",
    "epoch" (from 0), "loss", "s1".."s4", "edge", "lr"}, also in ``out_dir/history.json``. A non-finite loss
    stops training.
    """
    if img_size != model.img_size:
        raise ConfigError(f"img_size {img_size} differs from the model's {model.img_size}")
    if min(epochs, batch_size, lr_step) < 1 or not lr > 0:
        raise ConfigError(f"epochs, batch_size, lr_step must be ≥ 1 and lr > 0 "
                          f"(got {epochs}, {batch_size}, {lr_step}, {lr})")
    device = torch.device(device)
    torch.manual_seed(seed)
    dataset = DUTSFolder(root, img_size, train=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda")
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = max(1, len(loader))

    def step(m: RGBSOD, batch) -> tuple[torch.Tensor, dict]:
        images, masks = (t.to(device, non_blocking=True) for t in batch)
        loss, parts = sod_loss(m(images), masks)
        return loss, {k: v for k, v in parts.items() if k != "total"}

    return fit(model, loader, optimizer, total_steps=epochs * steps_per_epoch, step_fn=step, device=device,
               out_dir=Path(out_dir), desc="train_sod", amp=amp, tensorboard=tensorboard,
               schedule=lambda k: lr_gamma ** (k // steps_per_epoch // lr_step))


@torch.inference_mode()
def predict_batch(model: RGBSOD, images: list[np.ndarray], *, img_size: int, device: str | torch.device,
                  batch_size: int = 8) -> list[np.ndarray]:
    """RGB uint8 images [H_i,W_i,3] → saliency maps float32 [H_i,W_i] in [0,1] (puts the model in eval mode).

    Each image is resized to img_size×img_size, predicted, and the map resized back bilinearly.
    """
    if img_size != model.img_size:
        raise ConfigError(f"img_size {img_size} differs from the model's {model.img_size}")
    model.to(device).eval()
    maps = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        x = torch.stack([image_to_tensor(np.asarray(im), img_size) for im in chunk]).to(device)
        prob = model.predict(x).float()
        for im, p in zip(chunk, prob):
            full = F.interpolate(p[None], size=im.shape[:2], mode="bilinear", align_corners=False)
            maps.append(full[0, 0].clamp_(0, 1).cpu().numpy().astype(np.float32))
    return maps


def predict_saliency(model: RGBSOD, image: np.ndarray, *, img_size: int,
                     device: str | torch.device) -> np.ndarray:
    """RGB uint8 [H,W,3] → saliency float32 [H,W] in [0,1]; see ``predict_batch``."""
    return predict_batch(model, [image], img_size=img_size, device=device)[0]
