"""Stages ``make_pseudo`` and ``eval_pseudo``: CAMs propagated by the boundary-bounded random walk (SPEC §6).

Per image: ``make_pseudo/{id}.png`` (palette PNG, class ids), ``make_pseudo/scores/{id}.npz`` (``keys``
int16 [K], ``scores`` float16 [K,H,W]: the walk's upsampled scores divided by their global maximum — the soft
maps the Selector's alpha form reads), and with ``walk.crf`` a dense-CRF variant in ``make_pseudo/crf/``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from salmask.boundary.crf import crf_enabled, crf_labels, dense_crf
from salmask.cam.evaluate import class_lut, scores_to_index, with_background
from salmask.errors import ConfigError
from salmask.io import load_npz, read_image, save_npz, write_png
from salmask.metrics.confusion import ConfusionMatrix
from salmask.pipeline import Context, stage
from salmask.refine import postprocess
from salmask.stage_utils import eval_ids, loop, todo
from salmask.utils import dist


def walk_scores(cam: np.ndarray, boundary: np.ndarray, hw: tuple[int, int], cfg,
                device: torch.device) -> np.ndarray:
    """Stride-4 CAMs [K,h,w] + boundary [h,w] -> walk scores [K,H,W] in [0,1] (divided by the global max);
    see :func:`salmask.refine.postprocess.walk_scores`."""
    return postprocess.walk_scores(cam, boundary, hw, beta=cfg.beta, exp_times=cfg.exp_times, radius=cfg.radius,
                                   device=device)


def crf_refine(image: np.ndarray, index: np.ndarray, scores: np.ndarray, bg_score: float, unary: str) -> np.ndarray:
    """Dense-CRF refinement of a pseudo mask, as indices into [background, *keys] -> int64 [H,W].

    ``unary="labels"`` (BES's ``crf_inference_label``): the hard mask trusted with probability 0.7,
    bilateral sxy 20. ``"scores"`` (salmask's option): the walk's soft scores with the background score,
    renormalised per pixel, as probabilities; it keeps how sure the walk was.
    """
    if unary not in ("labels", "scores"):
        raise ConfigError(f"walk.crf_unary must be 'labels' or 'scores', got {unary!r}")
    if unary == "labels":
        return crf_labels(image, index, n_labels=scores.shape[0] + 1, gt_prob=0.7, sxy_bilateral=20)
    probs = with_background(scores, bg_score)
    return dense_crf(image, probs / probs.sum(0, keepdims=True), sxy_bilateral=20).argmax(0)


@stage("make_pseudo", sections=("walk",), needs=("make_cam", "make_boundary"))
def run_make_pseudo(ctx: Context) -> dict:
    """Pseudo masks: random walk of the stride-4 CAMs bounded by the boundary maps, then argmax with a
    background score."""
    w = ctx.cfg.walk
    images = ctx.split("pseudo_split")
    out = ctx.dir()
    use_crf = crf_enabled(w.crf)
    ids = todo(images.ids, lambda i: out / f"{i}.png")
    for i in loop(ids, "make_pseudo"):
        cam = load_npz(ctx.dir("make_cam") / f"{i}.npz")
        boundary = load_npz(ctx.dir("make_boundary") / f"{i}.npz")["boundary"]
        hw = cam["high_res"].shape[1:]
        scores = walk_scores(cam["cam"], boundary, hw, w, ctx.device)
        index, lut = scores_to_index(scores, w.bg_score), class_lut(cam["keys"])
        labels = lut[index]
        if use_crf:
            refined = crf_refine(read_image(images.image_path(i)), index, scores, w.bg_score, w.crf_unary)
            write_png(out / "crf" / f"{i}.png", lut[refined], images.meta.palette)
        save_npz(out / "scores" / f"{i}.npz", keys=cam["keys"], scores=scores.astype(np.float16))
        write_png(out / f"{i}.png", labels, images.meta.palette)
    return {"images": len(images.ids), "crf": use_crf}


def score_masks(ctx: Context, folder, ids: list[str]) -> dict:
    """Metrics of ``folder/{id}.png`` on ``ids`` (ignore counted as background), all images and the
    single-class subset, summed over ranks."""
    from salmask.io import read_mask

    images = ctx.split("pseudo_split")
    meta = images.meta
    cm_all, cm_single = ConfusionMatrix(meta.num_classes), ConfusionMatrix(meta.num_classes)
    for i in dist.shard(ids):
        gt = read_mask(images.mask_path(i), meta.num_classes, meta.ignore_index)
        pred = read_mask(folder / f"{i}.png")
        cm_all.update(pred, gt, name=str(folder / f"{i}.png"))
        if len(images.labels[i]) == 1:
            cm_single.update(pred, gt, name=str(folder / f"{i}.png"))
    keep = ("Acc", "Acc_class", "mIoU", "fwIoU", "per_class")
    res = {k: v for k, v in cm_all.all_reduce().scores(meta.classes).items() if k in keep}
    res["single_class"] = {k: v for k, v in cm_single.all_reduce().scores(meta.classes).items() if k in keep}
    res["single_class"]["images"] = sum(len(images.labels[i]) == 1 for i in ids)
    return res


@stage("eval_pseudo", sections=("walk",), needs=("make_pseudo",))
def run_eval_pseudo(ctx: Context) -> dict:
    """Pseudo-mask metrics on the evaluation split (all images and the single-class subset)."""
    ids = eval_ids(ctx)
    metrics = score_masks(ctx, ctx.dir("make_pseudo"), ids)
    if ctx.cfg.walk.crf and (ctx.dir("make_pseudo") / "crf").is_dir():
        metrics["crf"] = score_masks(ctx, ctx.dir("make_pseudo") / "crf", ids)
    return {"images": len(ids), "metrics": metrics}
