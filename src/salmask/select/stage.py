"""Stages ``select`` (the Salient Object Selector on SBE's pseudo masks) and ``eval_select``.

``select`` reads no ground truth: it writes ``select/masks/{id}.png`` and ``select/report.json``. With
``select.mode: auto`` a judge decides, per single-class image, whether the walk's mask or the saliency mask
holds the object (:mod:`salmask.select.judge`): the boundary map of ``make_boundary`` along each mask's
outline (``select.judge: boundary``) or the CAM classifier of ``train_cam`` (``classifier``).
``eval_select`` scores those masks (all images and the single-class subset) and, with ``select.sweep``,
reproduces the shape of the seed's Table 3 (``eval_select/sweep.json``, ``sweep.png``); in ``auto`` mode it
also says where the label-free decision landed against the sweep's ground-truth-best threshold.
"""
from __future__ import annotations

from salmask.errors import ConfigError
from salmask.io import write_json
from salmask.cam.stage import load_classifier
from salmask.refine.stage import score_masks
from salmask.registry import Context, stage
from salmask.select.judge import BoundaryJudge, ClassifierJudge, boundary_file
from salmask.select.sos import SelectorConfig, format_report, resolve_classes, select_folder
from salmask.stage_utils import eval_ids
from salmask.utils import dist
from salmask.utils.log import logger


def selector_config(ctx: Context, meta) -> SelectorConfig:
    s = ctx.cfg.select
    salient = None
    if s.salient_classes:
        salient = resolve_classes(list(s.salient_classes), num_classes=meta.num_classes,
                                  class_names=meta.classes, source="select.salient_classes")
    return SelectorConfig(mode=s.mode, t0=s.t0, t1=s.t1, tau=s.tau, eta=s.eta, sal_thres=s.sal_thres,
                          salient_classes=salient)


JUDGES = {"boundary": "make_boundary", "classifier": "train_cam"}
"""``select.judge`` -> the stage whose output the judge reads."""


def _needs(cfg) -> tuple[str, ...]:
    if cfg.select.mode != "auto":
        return ("make_pseudo", "saliency")
    return ("make_pseudo", "saliency", JUDGES[cfg.select.judge])


def _check_judge(cfg) -> None:
    """``select.mode: auto`` needs its judge's evidence: the boundary judge reads the boundary network's map."""
    s = cfg.select
    if s.mode != "auto":
        return
    if s.judge == "boundary" and cfg.walk.boundary == "saliency":
        raise ConfigError("select.judge=boundary reads the boundary network's map, which walk.boundary=saliency "
                          "does not train; use select.judge=classifier (or walk.boundary=learned / both)")


@stage("select", sections=("select",), needs=_needs, enabled=lambda cfg: cfg.select.enabled,
       label="Selector masks", reads=("pseudo_split",), labels=("pseudo_split",), bytes_per_pixel=0.15,
       check=_check_judge)
def run_select(ctx: Context) -> dict:
    """Replace (or fuse) single-class pseudo masks by the saliency map where they agree (``auto``: where the
    judge finds the object in the saliency mask rather than in the walk's)."""
    images = ctx.split("pseudo_split")
    meta = images.meta
    report = {}
    if dist.is_main():  # class salience is a dataset-wide statistic: one pass on rank 0
        judge = None
        _check_judge(ctx.cfg)
        if ctx.cfg.select.mode == "auto" and ctx.cfg.select.judge == "boundary":
            if not ctx.dir("make_boundary").is_dir():
                raise ConfigError("select.judge=boundary reads make_boundary's maps, which this run does not "
                                  f"have (walk.boundary={ctx.cfg.walk.boundary}); use select.judge=classifier")
            judge = BoundaryJudge(boundary_file(ctx.dir("make_boundary")))
        elif ctx.cfg.select.mode == "auto":
            judge = ClassifierJudge(load_classifier(ctx), images.image_path, device=ctx.device, amp=ctx.amp)
        report = select_folder(ctx.dir("make_pseudo"), ctx.dir("saliency"), ctx.dir() / "masks",
                               num_classes=meta.num_classes, config=selector_config(ctx, meta),
                               labels={i: images.labels[i] for i in images.ids},
                               soft_dir=ctx.dir("make_pseudo") / "scores", class_names=meta.classes,
                               ids=images.ids, palette=meta.palette, overwrite=False, judge=judge,
                               progress=True)
        write_json(ctx.dir() / "report.json", report)
        logger.info("select:\n%s", format_report(report))
    dist.barrier()
    mode = ctx.cfg.select.mode
    return {"images": len(images.ids), "replaced": report.get("replaced"),
            "single_class": report.get("single_class"),
            "decision": f"auto: {ctx.cfg.select.judge}" if mode == "auto" else mode}


@stage("eval_select", sections=("select",), needs=("select",), enabled=lambda cfg: cfg.select.enabled,
       label="pseudo masks: SBE + Selector (SOS)", reads=("pseudo_split", "eval_split"), masks=("eval_split",))
def run_eval_select(ctx: Context) -> dict:
    """Selector masks scored on the evaluation split; the replacement-threshold sweep (Table 3)."""
    from salmask.select.sweep import format_sweep_table, plot_sweep, sweep

    images = ctx.split("pseudo_split")
    ids = eval_ids(ctx)
    metrics = score_masks(ctx, ctx.dir("select") / "masks", ids)
    result: dict = {"images": len(ids), "metrics": metrics}
    if ctx.cfg.select.sweep and dist.is_main():
        s = ctx.cfg.select
        cfg = selector_config(ctx, images.meta)
        rows = sweep(ctx.dir("make_pseudo"), ctx.dir("saliency"), images.mask_path(ids[0]).parent,
                     num_classes=images.meta.num_classes, t1=0.0, eta=s.eta, salient_classes=cfg.salient_classes,
                     sal_thres=s.sal_thres, labels={i: images.labels[i] for i in ids},
                     class_names=images.meta.classes, ids=ids)
        write_json(ctx.dir() / "sweep.json", rows)
        plot_sweep(rows, ctx.dir() / "sweep.png")
        logger.info("select sweep (replacement threshold t0, t1=0):\n%s", format_sweep_table(rows))
        best = max(rows, key=lambda r: r["all"]["mIoU"])
        result["sweep_best"] = {"t0": best["alpha"], "replaced": best["replaced"], "mIoU": best["all"]["mIoU"]}
        if s.mode == "auto":
            result["auto_vs_sweep"] = {"auto_mIoU": metrics["mIoU"], "best_t0": best["alpha"],
                                       "best_mIoU": best["all"]["mIoU"],
                                       "below_best": round(best["all"]["mIoU"] - metrics["mIoU"], 3)}
            logger.info("eval_select: the label-free decision %.2f mIoU, the sweep's ground-truth-best t0 = %.2f "
                        "%.2f", metrics["mIoU"], best["alpha"], best["all"]["mIoU"])
    return result
