"""Training the CAM classifier (docs/method.md#cam-classifier): multilabel soft margin loss, SGD + poly schedule."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from salmask.data import transforms as T
from salmask.data.datasets import ImageSet
from salmask.io import read_image
from salmask.models.build import save_network
from salmask.models.cam_net import CAMNet
from salmask.utils.train import fit, make_loader, seed_everything, wrap_ddp


class ClassificationDataset(Dataset):
    """(image [3,crop,crop], multi-hot labels [C]) with IRNet's augmentation; never reads masks."""

    def __init__(self, images: ImageSet, crop: int, resize_long: tuple[int, int], seed: int):
        self.images, self.crop, self.resize_long, self.seed = images, crop, tuple(resize_long), seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int):
        image_id = self.images.ids[idx]
        rng = T.sample_rng(idx)
        img = read_image(self.images.image_path(image_id))
        img, _ = T.random_resize_long(rng, img, [], *self.resize_long)
        (img,) = T.random_flip(rng, [img])
        img = T.normalize(img)
        (img,) = T.random_crop(rng, self.crop, [(img, 0.0)])
        return torch.from_numpy(img.transpose(2, 0, 1).copy()), torch.from_numpy(self.images.label_vector(image_id))


def train_cam(images: ImageSet, cfg, *, device: torch.device, out_dir: Path, amp: bool, num_workers: int,
              seed: int, tensorboard: bool = False) -> dict:
    """Train and save ``out_dir/model.pt`` (weights, class names, backbone); returns the last losses."""
    seed_everything(seed)
    model = CAMNet(images.meta.num_fg, cfg.backbone, cfg.pretrained, cfg.attention_k).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ds = ClassificationDataset(images, cfg.crop, tuple(cfg.resize_long), seed)
    loader = make_loader(ds, cfg.batch_size, seed=seed, num_workers=num_workers)
    optimizer = torch.optim.SGD(model.param_groups(cfg.lr, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
    ddp = wrap_ddp(model, device)

    def step(m, batch):
        x, y = (t.to(device, non_blocking=True) for t in batch)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.multilabel_soft_margin_loss(m(x).float(), y)
        return loss, {}

    history = fit(ddp, loader, optimizer, total_steps=cfg.epochs * max(1, len(loader)), step_fn=step,
                  device=device, out_dir=out_dir, desc="train_cam", amp=amp, tensorboard=tensorboard)
    save_network(out_dir / "model.pt", model, "cam", {"num_classes": images.meta.num_fg, "backbone": cfg.backbone,
                                                      "attention_k": cfg.attention_k},
                 classes=list(images.meta.classes), backbone=cfg.backbone)
    last = [h["loss"] for h in history[-max(1, len(loader)):]]
    return {"steps": len(history), "final_loss": float(np.mean(last)) if last else None}
