"""Stages ``make_pseudo`` and ``eval_pseudo``: CAMs propagated by the boundary-bounded random walk (docs/method.md#random-walk).

Per image: ``make_pseudo/{id}.png`` (palette PNG, class ids), ``make_pseudo/scores/{id}.npz`` (``keys``
int16 [K], ``scores`` float16 [K,H,W]: the walk's upsampled scores divided by their global maximum — the soft
maps the Selector's alpha form reads), and with ``walk.crf`` a dense-CRF variant in ``make_pseudo/crf/``.
"""
from __future__ import annotations

import numpy as np
import torch

from salmask.boundary.crf import crf_enabled, crf_labels, crf_package, dense_crf
from salmask.cam.evaluate import ThresholdSweep, class_lut, scores_to_index, with_background
from salmask.errors import ConfigError, InputError
from salmask.io import load_npz, read_gray, read_image, save_npz, write_png
from salmask.metrics.confusion import ConfusionMatrix
from salmask.registry import Context, stage
from salmask.refine import postprocess
from salmask.refine.bg_score import GRID, SaliencyAgreement, choose
from salmask.refine.edges import walk_boundary
from salmask.stage_utils import eval_ids, loop, todo
from salmask.utils import dist
from salmask.utils.log import logger


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


def _needs(cfg) -> tuple[str, ...]:
    w = cfg.walk
    needs = ("make_cam",) + (("make_boundary",) if w.boundary != "saliency" else ())
    return needs + (("saliency",) if w.boundary != "learned" or w.bg_score == "auto" else ())


def _saliency(ctx: Context, i: str, hw: tuple[int, int]) -> np.ndarray:
    path = ctx.dir("saliency") / f"{i}.png"
    sal = read_gray(path)
    if sal.shape != tuple(hw):
        raise InputError(path, f"saliency size {sal.shape} differs from the CAM's {tuple(hw)}")
    return sal


def resolve_bg_score(ctx: Context, ids: list[str]) -> tuple[float, list[dict] | None]:
    """``walk.bg_score`` as a number: the configured one, or for ``auto`` the score of highest agreement with
    saliency over ``ids`` (:mod:`salmask.refine.bg_score`; no ground truth read) and its curve."""
    if ctx.cfg.walk.bg_score != "auto":
        return float(ctx.cfg.walk.bg_score), None
    agreement = SaliencyAgreement()
    for i in loop(dist.shard(ids), "make_pseudo: background score"):
        scores = load_npz(ctx.dir() / "scores" / f"{i}.npz", "scores")["scores"]
        agreement.update(scores, _saliency(ctx, i, scores.shape[1:]))
    score, curve = choose(agreement.all_reduce())
    logger.info("make_pseudo: walk.bg_score auto -> %.2f (foreground/saliency IoU %.2f%%)", score,
                max(c["iou"] for c in curve))
    return score, curve


@stage("make_pseudo", sections=("walk",), needs=_needs, label="pseudo masks", reads=("pseudo_split",),
       bytes_per_pixel=6.0, crf_key="walk.crf")
def run_make_pseudo(ctx: Context) -> dict:
    """Pseudo masks: the random walk of the CAMs inside the boundary evidence, then argmax against a background
    score (fixed, or chosen by agreement with saliency)."""
    w = ctx.cfg.walk
    images = ctx.split("pseudo_split", need_labels=False)  # nor masks: nothing here reads ground truth
    out = ctx.dir()
    use_crf = crf_enabled(w.crf, "walk.crf")
    ctx.used("crf", crf_package() if use_crf else False)
    for i in loop(todo(images.ids, lambda i: out / "scores" / f"{i}.npz"), "make_pseudo"):
        cam = load_npz(ctx.dir("make_cam") / f"{i}.npz", "cam")
        hw = cam["high_res"].shape[1:]
        learned = None
        if w.boundary != "saliency":
            path = ctx.dir("make_boundary") / f"{i}.npz"
            learned = load_npz(path, "boundary")["boundary"]
            if learned.shape != cam["cam"].shape[1:]:
                raise InputError(path, f"boundary map of {list(learned.shape)} for CAMs of {list(cam['cam'].shape[1:])}")
        sal = _saliency(ctx, i, hw) if w.boundary != "learned" else None
        edge = walk_boundary(w.boundary, learned, sal, cam["cam"].shape[1:])
        scores = walk_scores(cam["cam"], edge, hw, w, ctx.device)
        save_npz(out / "scores" / f"{i}.npz", keys=cam["keys"], scores=scores.astype(np.float16))
    dist.barrier()
    bg_score, curve = resolve_bg_score(ctx, images.ids)
    for i in loop(todo(images.ids, lambda i: out / f"{i}.png"), "make_pseudo: masks"):
        stored = load_npz(out / "scores" / f"{i}.npz", "scores")
        scores = stored["scores"].astype(np.float32)
        index, lut = scores_to_index(scores, bg_score), class_lut(stored["keys"])
        if use_crf:
            refined = crf_refine(read_image(images.image_path(i)), index, scores, bg_score, w.crf_unary)
            write_png(out / "crf" / f"{i}.png", lut[refined], images.meta.palette)
        write_png(out / f"{i}.png", lut[index], images.meta.palette)
    result = {"images": len(images.ids), "crf": use_crf, "boundary": w.boundary, "bg_score": bg_score}
    if curve is not None:
        result["bg_score_auto"] = {"criterion": "IoU (%) of the pseudo foreground with saliency > 0.5",
                                   "curve": curve}
    return result


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


@stage("eval_pseudo", sections=("walk",), needs=("make_pseudo",), label="pseudo masks: SBE",
       reads=("pseudo_split", "eval_split"), masks=("eval_split",))
def run_eval_pseudo(ctx: Context) -> dict:
    """Pseudo-mask metrics on the evaluation split (all images and the single-class subset), and the walk's
    scores re-cut at each background score of a sweep (what ground truth would have chosen)."""
    ids = eval_ids(ctx)
    metrics = score_masks(ctx, ctx.dir("make_pseudo"), ids)
    if ctx.cfg.walk.crf and (ctx.dir("make_pseudo") / "crf").is_dir():
        metrics["crf"] = score_masks(ctx, ctx.dir("make_pseudo") / "crf", ids)
    return {"images": len(ids), "metrics": metrics, "bg_sweep": bg_sweep(ctx, ids)}


def bg_sweep(ctx: Context, ids: list[str]) -> dict:
    """mIoU of the walk's stored scores at each background score of :data:`GRID` on ``ids`` (ground truth:
    evaluation only), the best of them, and the score the run used."""
    from salmask.io import read_mask

    images = ctx.split("pseudo_split")
    meta = images.meta
    sweep = ThresholdSweep(GRID, meta.num_classes)
    for i in dist.shard(ids):
        stored = load_npz(ctx.dir("make_pseudo") / "scores" / f"{i}.npz", "scores")
        sweep.update(stored["scores"], stored["keys"], read_mask(images.mask_path(i), meta.num_classes,
                                                                 meta.ignore_index), name=i)
    table = [{"score": r["threshold"], "mIoU": round(r["mIoU"], 3)} for r in sweep.all_reduce().table(meta.classes)]
    best = max(table, key=lambda r: r["mIoU"])
    return {"used": ctx.manifest("make_pseudo").get("bg_score"), "best_score": best["score"],
            "best_mIoU": best["mIoU"], "curve": table}
