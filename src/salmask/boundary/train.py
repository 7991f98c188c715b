"""Training the boundary network on synthesised boundary labels with the SBE joint loss (docs/method.md#boundary-network-and-loss)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from salmask.boundary.labels import IGNORE
from salmask.boundary.loss import boundary_loss
from salmask.data import transforms as T
from salmask.io import read_gray, read_image, read_mask
from salmask.models.boundary_net import BoundaryNet
from salmask.models.build import save_network
from salmask.utils.train import fit, load_checkpoint, make_loader, seed_everything, wrap_ddp


class BoundaryDataset(Dataset):
    """(image [3,crop,crop], labels uint8 [crop/4,crop/4] codes, saliency float [crop/4,crop/4])."""

    def __init__(self, ids: list[str], image_path, label_dir: Path, saliency_dir: Path | None, crop: int,
                 scale: tuple[float, float]):
        self.ids, self.image_path, self.label_dir, self.saliency_dir = ids, image_path, label_dir, saliency_dir
        self.crop, self.scale = crop, tuple(scale)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int):
        i = self.ids[idx]
        rng = T.sample_rng(idx)
        img = read_image(self.image_path(i))
        lab = read_mask(self.label_dir / f"{i}.png")
        sal = read_gray(self.saliency_dir / f"{i}.png") if self.saliency_dir else np.ones(lab.shape, np.float32)
        img, (lab, sal) = T.random_scale(rng, img, [(lab, True), (sal, False)], *self.scale)
        img, lab, sal = T.random_flip(rng, [img, lab, sal])
        img, lab, sal = T.random_crop(rng, self.crop, [(T.normalize(img), 0.0), (lab, IGNORE), (sal, 0.0)])
        small = (-(-self.crop // 4),) * 2
        lab = T.downsample_labels(lab, small)
        sal = T.resize(sal, small)
        return (torch.from_numpy(img.transpose(2, 0, 1).copy()), torch.from_numpy(lab.copy()),
                torch.from_numpy(sal.copy()))


def build_boundary_net(cfg, cam_checkpoint: Path | None) -> BoundaryNet:
    """ImageNet-initialised (``init=pretrained``) or from the trained CAM classifier (``init=cam``)."""
    if cfg.init == "cam":
        ckpt = load_checkpoint(cam_checkpoint)
        net = BoundaryNet(ckpt.get("backbone", cfg.backbone), pretrained=False, freeze_backbone=False)
        net.load_backbone(ckpt["model"])
        return net
    return BoundaryNet(cfg.backbone, pretrained=cfg.pretrained)


def train_boundary(ids: list[str], image_path, label_dir: Path, saliency_dir: Path | None, cfg, *,
                   cam_checkpoint: Path, device: torch.device, out_dir: Path, amp: bool, num_workers: int,
                   seed: int, tensorboard: bool = False) -> dict:
    seed_everything(seed)
    net = build_boundary_net(cfg, cam_checkpoint).to(device)
    ds = BoundaryDataset(ids, image_path, label_dir, saliency_dir, cfg.crop, tuple(cfg.scale))
    loader = make_loader(ds, cfg.batch_size, seed=seed, num_workers=num_workers)
    head = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    backbone = [p for p in net.backbone.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": cfg.lr}] + ([{"params": backbone, "lr": cfg.lr / 10}] if backbone else [])
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    ddp = wrap_ddp(net, device)
    mode = cfg.loss

    def step(m, batch):
        x, lab, sal = (t.to(device, non_blocking=True) for t in batch)
        prob = torch.sigmoid(m(x).float())
        loss, parts = boundary_loss(prob, lab, sal if mode == "sbe" else None, mode=mode)
        return loss, {k: float(v) for k, v in parts.items()}

    history = fit(ddp, loader, optimizer, total_steps=cfg.epochs * max(1, len(loader)), step_fn=step,
                  device=device, out_dir=out_dir, desc="train_boundary", amp=amp, tensorboard=tensorboard)
    save_network(out_dir / "model.pt", net, "boundary", {"backbone": _backbone_name(cfg, cam_checkpoint),
                                                         "freeze_backbone": net.freeze_backbone})
    return {"steps": len(history), "final_loss": history[-1]["loss"] if history else None}


def _backbone_name(cfg, cam_checkpoint: Path) -> str:
    return load_checkpoint(cam_checkpoint).get("backbone", cfg.backbone) if cfg.init == "cam" else cfg.backbone
