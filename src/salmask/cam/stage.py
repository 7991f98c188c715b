"""Stages ``train_cam``, ``make_cam``, ``eval_cam``."""
from __future__ import annotations

from pathlib import Path

from salmask.cam.config import CamConfig
from salmask.cam.evaluate import ThresholdSweep
from salmask.cam.infer import cams_for_batch
from salmask.cam.precomputed import check_format, check_source, import_cams
from salmask.cam.train import train_cam
from salmask.errors import ConfigError, InputError
from salmask.io import load_npz, read_image, read_mask, save_npz, write_json
from salmask.models.build import load_network
from salmask.registry import Context, stage
from salmask.schema import keys_of
from salmask.stage_utils import eval_ids, image_size, loop, prefetch, size_batches, todo
from salmask.utils import dist
from salmask.utils.log import logger, progress_bar


TRAIN_KEYS = keys_of(CamConfig, "cam", "weights")
"""What the classifier's weights depend on; inference scales and evaluation thresholds are not among them."""


def _trains(cfg) -> bool:
    """``cam.source: precomputed`` takes another method's CAMs: no classifier is trained."""
    return cfg.cam.source == "train"


def _make_cam_sections(cfg) -> tuple[str, ...]:
    return keys_of(CamConfig, "cam", "cams" if _trains(cfg) else "import")


def _make_cam_needs(cfg) -> tuple[str, ...]:
    return ("train_cam",) if _trains(cfg) else ("generate",)


@stage("train_cam", sections=TRAIN_KEYS, needs=("generate",), enabled=_trains, label="CAM classifier",
       reads=("train_split",), labels=("train_split",), checkpoint_bytes=400e6, model=("cam", "backbone"))
def run_train_cam(ctx: Context) -> dict:
    """Train the CAM classifier on image-level labels."""
    images = ctx.split("train_split")
    images.check_files()
    ctx.used("tensorboard", bool(ctx.cfg.tensorboard))
    return train_cam(images, ctx.cfg.cam, device=ctx.device, out_dir=ctx.dir(), amp=ctx.amp,
                     num_workers=dist.loader_workers(ctx.cfg.num_workers), seed=ctx.cfg.seed,
                     tensorboard=ctx.cfg.tensorboard)


def load_classifier(ctx: Context):
    """The run's trained CAM classifier (``train_cam/model.pt``) on ``ctx.device``, in eval mode; a checkpoint
    from before networks recorded their arguments is built from the run's ``cam`` settings."""
    return load_network(ctx.dir("train_cam") / "model.pt", ctx.device, expect="cam",
                        defaults={"backbone": ctx.cfg.cam.backbone, "attention_k": ctx.cfg.cam.attention_k})


@stage("make_cam", sections=_make_cam_sections, needs=_make_cam_needs, label="CAMs", reads=("pseudo_split",),
       labels=("pseudo_split",), bytes_per_pixel=4.0, check=check_source)
def run_make_cam(ctx: Context) -> dict:
    """Multi-scale flip-averaged CAMs of the pseudo-mask split, stride 4 and full size, per image .npz (or
    another method's CAMs imported and checked, ``cam.source: precomputed``)."""
    images = ctx.split("pseudo_split")
    cfg = ctx.cfg.cam
    if not _trains(ctx.cfg):
        return _import_cams(ctx, images)
    path = ctx.dir("train_cam") / "model.pt"
    model = load_classifier(ctx)
    if model.classifier.weight.shape[0] != images.meta.num_fg:
        raise InputError(path, f"classifies {model.classifier.weight.shape[0]} classes, the dataset has "
                               f"{images.meta.num_fg}")
    out = ctx.dir()
    ids = todo(images.ids, lambda i: out / f"{i}.npz")
    sizes = {i: image_size(images.image_path(i)) for i in ids}
    no_label = [i for i in ids if not images.labels[i]]
    if no_label:
        logger.warning("make_cam: %d images have no positive class (e.g. %s); their CAM files are empty",
                       len(no_label), no_label[0])
    bar = progress_bar("make_cam", total=len(ids))
    batches, _ = size_batches(sizes, cfg.infer_batch, ctx.device, "cam")
    load = lambda batch: [read_image(images.image_path(i)) for i in batch]  # noqa: E731
    workers = max(1, min(4, dist.loader_workers(ctx.cfg.num_workers)))
    for batch, arrays in prefetch(batches, load, workers=workers):
        results = cams_for_batch(model, arrays, [images.labels[i] for i in batch], cfg.scales, ctx.device, ctx.amp)
        for i, res in zip(batch, results):
            save_npz(out / f"{i}.npz", **res)
        bar.update(len(batch))
    bar.close()
    return {"images": len(images.ids)}


def _import_cams(ctx: Context, images) -> dict:
    """``cam.dir``'s maps checked against each image and written as ``make_cam``'s ``.npz``."""
    cfg = ctx.cfg.cam
    fmt = check_format(str(cfg.format))
    if not cfg.dir:
        raise ConfigError("cam.source=precomputed needs cam.dir, the folder of CAM files")
    folder, out = Path(str(cfg.dir)), ctx.dir()
    ids = todo(images.ids, lambda i: out / f"{i}.npz")
    for i in loop(ids, "make_cam: import"):
        import_cams(folder, fmt, i, images.labels[i], image_size(images.image_path(i)), images.meta.num_fg,
                    out / f"{i}.npz")
    return {"images": len(images.ids), "source": "precomputed", "format": fmt, "dir": str(folder)}


@stage("eval_cam", sections=keys_of(CamConfig, "cam", "eval"), needs=("make_cam",), label="CAM",
       reads=("pseudo_split", "eval_split"), masks=("eval_split",))
def run_eval_cam(ctx: Context) -> dict:
    """CAM mIoU on the evaluation split for a sweep of background thresholds."""
    images = ctx.split("pseudo_split")
    meta = images.meta
    ids = eval_ids(ctx)
    sweep = ThresholdSweep(ctx.cfg.cam.eval_thresholds, meta.num_classes)
    for i in dist.shard(ids):
        cam = load_npz(ctx.dir("make_cam") / f"{i}.npz", "cam")
        gt = read_mask(images.mask_path(i), meta.num_classes, meta.ignore_index)
        sweep.update(cam["high_res"], cam["keys"], gt, name=f"{i}")
    table = sweep.all_reduce().table(meta.classes)
    best = max(table, key=lambda r: r["mIoU"])
    at_default = min(table, key=lambda r: abs(r["threshold"] - ctx.cfg.cam.bg_threshold))
    if dist.is_main():
        write_json(ctx.dir() / "sweep.json", table)
    logger.info("eval_cam: mIoU %.2f at t=%.2f; best %.2f at t=%.2f", at_default["mIoU"],
                at_default["threshold"], best["mIoU"], best["threshold"])
    metrics = {k: at_default[k] for k in ("Acc", "Acc_class", "mIoU", "fwIoU", "per_class")}
    return {"images": len(ids), "metrics": {**metrics, "threshold": at_default["threshold"],
                                            "best_threshold": best["threshold"], "best_mIoU": best["mIoU"]}}
