"""Stages ``make_boundary_labels``, ``train_boundary``, ``make_boundary`` (docs/method.md#boundary-labels)."""
from __future__ import annotations

import numpy as np
import torch

from salmask.boundary.crf import crf_enabled, crf_package
from salmask.boundary.labels import boundary_labels, saliency_is_informative
from salmask.boundary.train import train_boundary
from salmask.cam.precomputed import no_classifier_init
from salmask.data.transforms import to_tensor
from salmask.errors import InputError
from salmask.io import load_npz, read_gray, read_image, save_npz, write_png
from salmask.models.build import load_network
from salmask.registry import Context, stage
from salmask.stage_utils import image_size, loop, prefetch, size_batches, todo
from salmask.utils import dist
from salmask.utils.log import logger, progress_bar


def _saliency_dir(ctx: Context):
    return ctx.dir("saliency") if ctx.cfg.boundary.loss == "sbe" else None


def _learned(cfg) -> bool:
    """The boundary network is trained only when the walk reads its map (``walk.boundary`` learned or both)."""
    return cfg.walk.boundary != "saliency"


@stage("make_boundary_labels", sections=("boundary_labels",), needs=("make_cam", "saliency"), enabled=_learned,
       label="boundary labels", reads=("pseudo_split",), labels=("pseudo_split",), bytes_per_pixel=0.15,
       crf_key="boundary_labels.crf")
def run_make_boundary_labels(ctx: Context) -> dict:
    """Boundary labels (BES codes) from CAMs and, for SBE, saliency maps; PNG per image."""
    b = ctx.cfg.boundary_labels
    images = ctx.split("pseudo_split")
    out = ctx.dir()
    use_crf = crf_enabled(b.crf, "boundary_labels.crf")
    ctx.used("crf", crf_package() if use_crf else False)
    ids = todo(images.ids, lambda i: out / f"{i}.png")
    flat = 0
    for i in loop(ids, "make_boundary_labels"):
        cam = load_npz(ctx.dir("make_cam") / f"{i}.npz", "cam")
        img = read_image(images.image_path(i)) if use_crf else None
        high_res = cam["high_res"].astype(np.float32)
        if img is not None and img.shape[:2] != high_res.shape[1:]:
            raise InputError(ctx.dir("make_cam") / f"{i}.npz", f"CAMs of {list(high_res.shape[1:])} for an image of "
                                                             f"{list(img.shape[:2])}")
        sal = None
        if b.use_saliency:
            path = ctx.dir("saliency") / f"{i}.png"
            sal = read_gray(path)
            if sal.shape != high_res.shape[1:]:
                raise InputError(path, f"saliency size {sal.shape} differs from the CAM's {high_res.shape[1:]}")
            if not saliency_is_informative(sal):
                logger.info("make_boundary_labels: %s has a constant saliency map; plain BES labels", path)
                flat += 1
        labels = boundary_labels(high_res, cam["keys"], sal, img, fg_thres=b.fg_thres, bg_thres=b.bg_thres,
                                 use_crf=use_crf, window=b.window, theta_scale=b.theta_scale,
                                 theta_diff=b.theta_diff, sal_edge_thres=b.sal_edge_thres)
        write_png(out / f"{i}.png", labels)
    return {"images": len(images.ids), "crf": use_crf, "constant_saliency_images": flat}


@stage("train_boundary", sections=("boundary",), needs=("make_boundary_labels", "train_cam"), enabled=_learned,
       label="boundary network", reads=("train_split",), checkpoint_bytes=400e6, model=("boundary", "backbone"),
       check=lambda cfg: no_classifier_init(cfg, "boundary"))
def run_train_boundary(ctx: Context) -> dict:
    """Train the boundary network with the SBE joint loss (or BES's, ``boundary.loss=bes``)."""
    train = ctx.split("train_split", need_labels=False)
    pseudo_ids = set(ctx.split("pseudo_split", need_labels=False).ids)
    ids = [i for i in train.ids if i in pseudo_ids]
    if not ids:
        raise InputError(ctx.dir("make_boundary_labels"), "no training image has boundary labels "
                                                          "(train_split must be within pseudo_split)")
    ctx.used("tensorboard", bool(ctx.cfg.tensorboard))
    return train_boundary(ids, train.image_path, ctx.dir("make_boundary_labels"), _saliency_dir(ctx),
                          ctx.cfg.boundary, cam_checkpoint=ctx.dir("train_cam") / "model.pt", device=ctx.device,
                          out_dir=ctx.dir(), amp=ctx.amp, num_workers=dist.loader_workers(ctx.cfg.num_workers),
                          seed=ctx.cfg.seed, tensorboard=ctx.cfg.tensorboard)


@stage("make_boundary", sections=("boundary",), needs=("train_boundary",), enabled=_learned,
       label="boundary maps", reads=("pseudo_split",), bytes_per_pixel=0.3)
def run_make_boundary(ctx: Context) -> dict:
    """Flip-averaged boundary maps at stride 4 (float16 .npz per image)."""
    images = ctx.split("pseudo_split", need_labels=False)
    net = load_network(ctx.dir("train_boundary") / "model.pt", ctx.device, expect="boundary")
    out = ctx.dir()
    ids = todo(images.ids, lambda i: out / f"{i}.npz")
    batches, _ = size_batches({i: image_size(images.image_path(i)) for i in ids}, ctx.cfg.boundary.infer_batch,
                              ctx.device, "boundary")
    bar = progress_bar("make_boundary", total=len(ids))
    load = lambda batch: [read_image(images.image_path(i)) for i in batch]  # noqa: E731
    for batch, arrays in prefetch(batches, load):
        with torch.no_grad():
            probs = net.predict(torch.stack([to_tensor(a) for a in arrays]).to(ctx.device))[:, 0]
        for i, prob in zip(batch, probs):
            save_npz(out / f"{i}.npz", boundary=prob.cpu().numpy().astype(np.float16))
        bar.update(len(batch))
    bar.close()
    return {"images": len(images.ids)}
