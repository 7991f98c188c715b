"""Training the RGB-SOD network on a DUTS-layout folder, and predicting saliency maps with it."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from salmask.data.duts import DUTSFolder, image_to_tensor
from salmask.errors import ConfigError, SalmaskError
from salmask.models.rgbsod import RGBSOD, sod_loss
from salmask.utils.log import progress_bar

log = logging.getLogger(__name__)


def train_rgbsod(model: RGBSOD, root: str | Path, *, epochs: int, batch_size: int, lr: float, lr_step: int,
                 lr_gamma: float = 0.5, img_size: int, device: str | torch.device, num_workers: int = 0,
                 log_every: int = 50, seed: int = 0, progress: bool = True,
                 on_epoch_end: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` in place with Adam and a StepLR schedule (lr × lr_gamma every ``lr_step`` epochs).

    Reference recipe (SPEC §3): Swin-B 224, 150 epochs, lr 1e-4 halved every 15 epochs, batch 16.
    Shuffling, flips and dropout follow ``seed`` (bit-identical reruns on CPU). Returns one record per
    epoch: {"epoch", "lr", "loss", "s1".."s4", "edge", "seconds"} with epoch-mean losses; each record is
    also passed to ``on_epoch_end`` (e.g. to write a checkpoint). A non-finite loss stops training.
    """
    if img_size != model.img_size:
        raise ConfigError(f"img_size {img_size} differs from the model's {model.img_size}")
    if min(epochs, batch_size, lr_step) < 1 or not lr > 0:
        raise ConfigError(f"epochs, batch_size, lr_step must be ≥ 1 and lr > 0 "
                          f"(got {epochs}, {batch_size}, {lr_step}, {lr})")
    torch.manual_seed(seed)
    dataset = DUTSFolder(root, img_size, train=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(seed),
                        pin_memory=torch.device(device).type == "cuda")
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=lr_gamma)
    history = []
    bar = progress_bar("train_sod", total=epochs * len(loader), unit="step", enabled=progress)
    for epoch in range(1, epochs + 1):
        model.train()
        start, sums, steps = time.perf_counter(), {}, 0
        current_lr = optimizer.param_groups[0]["lr"]
        for images, masks in loader:
            images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            loss, parts = sod_loss(model(images), masks)
            if not math.isfinite(parts["total"]):
                raise SalmaskError(f"rgbsod: non-finite loss at epoch {epoch} step {steps + 1}; "
                                   f"try a lower learning rate (now {current_lr:g})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{parts['total']:.4f}", refresh=False)
            bar.update(1)
            if log_every and steps % log_every == 0:
                log.info("rgbsod epoch %d step %d/%d loss %.4f", epoch, steps, len(loader), parts["total"])
        scheduler.step()
        means = {k: v / steps for k, v in sums.items()}
        record = {"epoch": epoch, "lr": current_lr, "loss": means.pop("total"), **means,
                  "seconds": time.perf_counter() - start}
        log.debug("rgbsod epoch %d/%d loss %.4f (%.1f s)", epoch, epochs, record["loss"], record["seconds"])
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(record)
    bar.close()
    return history


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
