"""Stages ``train_seg``, ``infer_seg``, ``eval_seg`` (docs/method.md#segmentation-network)."""
from __future__ import annotations

from pathlib import Path

from salmask.boundary.crf import crf_enabled, crf_package
from salmask.cam.precomputed import no_classifier_init
from salmask.errors import InputError
from salmask.io import read_image, write_png
from salmask.models.build import load_network
from salmask.registry import Context, stage
from salmask.schema import keys_of
from salmask.seg.config import SegConfig
from salmask.seg.inference import export_voc_test, prepare_model, segment
from salmask.seg.train import train_seg
from salmask.stage_utils import image_size, prefetch, size_batches, todo
from salmask.utils import dist
from salmask.utils.log import progress_bar


def mask_folder(source: str) -> Path | None:
    """The folder of masks ``seg.source`` names, or None for ``select`` / ``pseudo`` (the run's own masks)."""
    if source in ("select", "pseudo"):
        return None
    path = Path(source).expanduser()
    if not path.is_dir():
        raise InputError(path, "seg.source is neither select, pseudo nor a folder of masks")
    return path


def mask_source(ctx: Context) -> Path:
    src = str(ctx.cfg.seg.source)
    folder = mask_folder(src)
    if folder is not None:
        return folder
    return ctx.dir("select") / "masks" if src == "select" else ctx.dir("make_pseudo")


TRAIN_KEYS = keys_of(SegConfig, "seg", "weights")
"""What DeepLab's weights depend on: changing an inference setting (below) retrains nothing."""
INFER_KEYS = keys_of(SegConfig, "seg", "predictions")
"""What the predictions depend on besides the weights (``infer_batch`` and ``checkpoint_every`` change how, not what)."""

def _check(cfg) -> None:
    """Pre-flight: the mask source exists, and ``seg.init=cam`` has a classifier to start from."""
    mask_folder(str(cfg.seg.source))
    no_classifier_init(cfg, "seg")


def _needs(cfg) -> tuple[str, ...]:
    masks = {"select": ("select",), "pseudo": ("make_pseudo",)}.get(cfg.seg.source, ())
    return masks + (("train_cam",) if cfg.seg.init == "cam" else ())


@stage("train_seg", sections=TRAIN_KEYS, needs=_needs, label="segmentation network", reads=("train_split",),
       checkpoint_bytes=800e6, model=("seg", "backbone"), check=_check)
def run_train_seg(ctx: Context) -> dict:
    """Train DeepLab on the pseudo masks (of the Selector by default)."""
    train = ctx.split("train_split", need_labels=False)
    masks = mask_source(ctx)
    ids = [i for i in train.ids if (masks / f"{i}.png").is_file()]
    if len(ids) < len(train.ids):
        missing = next(i for i in train.ids if not (masks / f"{i}.png").is_file())
        raise InputError(masks / f"{missing}.png", f"pseudo mask missing for {len(train.ids) - len(ids)} "
                                                   f"training images")
    ctx.used("tensorboard", bool(ctx.cfg.tensorboard))
    return train_seg(ids, train.image_path, masks, train.meta.num_classes, ctx.cfg.seg, device=ctx.device,
                     out_dir=ctx.dir(), amp=ctx.amp, num_workers=dist.loader_workers(ctx.cfg.num_workers),
                     seed=ctx.cfg.seed, tensorboard=ctx.cfg.tensorboard,
                     cam_checkpoint=ctx.dir("train_cam") / "model.pt")


def _infer(ctx: Context, images, ids: list[str], out: Path) -> None:
    s = ctx.cfg.seg
    model = prepare_model(load_network(ctx.dir("train_seg") / "model.pt", ctx.device, expect="deeplab",
                                       defaults={"norm": s.norm}), ctx.device)
    use_crf = crf_enabled(s.crf, "seg.crf")
    ctx.used("crf", crf_package() if use_crf else False)
    ids = todo(ids, lambda i: out / f"{i}.png")
    sizes = {i: image_size(images.image_path(i)) for i in ids}
    batches, per_size = size_batches(sizes, s.infer_batch, ctx.device, "seg")
    bar = progress_bar("infer_seg", total=len(ids))
    load = lambda batch_ids: [read_image(images.image_path(i)) for i in batch_ids]  # noqa: E731
    for batch_ids, arrays in prefetch(batches, load):
        masks = segment(model, arrays, scales=tuple(s.scales), flip=s.flip, crf=use_crf, amp=ctx.amp,
                        batch=per_size[sizes[batch_ids[0]]])
        for i, mask in zip(batch_ids, masks):
            write_png(out / f"{i}.png", mask, images.meta.palette)
        bar.update(len(batch_ids))
    bar.close()


def fit_ids(ctx: Context) -> list[str]:
    """``seg.fit_images`` training images, evenly spaced, for the fit check: those of the eval split when it
    has any (their ground truth gives a second score), else of the training split."""
    n = int(ctx.cfg.seg.fit_images)
    if n <= 0:
        return []
    train = ctx.split("train_split", need_labels=False).ids
    pool = train
    if ctx.cfg.dataset.eval_split:
        in_train = set(train)
        pool = [i for i in ctx.split("eval_split", need_labels=False).ids if i in in_train] or train
    return pool[::max(1, len(pool) // n)][:n]


@stage("infer_seg", sections=INFER_KEYS, needs=("train_seg",), version=2,  # 2: inference.DEEPLAB_CRF's kernel
       label="segmentation predictions", reads=("val_split", "test_split"), bytes_per_pixel=0.15, crf_key="seg.crf")
def run_infer_seg(ctx: Context) -> dict:
    """Multi-scale + flip predictions on the val split (and the test split's server export), and on
    ``seg.fit_images`` training images for the fit check."""
    val = ctx.split("val_split", need_labels=False)
    _infer(ctx, val, val.ids, ctx.dir() / "val")
    result = {"val_images": len(val.ids)}
    fit = fit_ids(ctx)
    if fit:
        _infer(ctx, ctx.split("train_split", need_labels=False), fit, ctx.dir() / "train")
        result["fit_images"] = len(fit)
    if ctx.cfg.dataset.test_split:
        test = ctx.split("test_split", need_labels=False)
        _infer(ctx, test, test.ids, ctx.dir() / "test")
        dist.barrier()
        if dist.is_main():
            result["test_tar"] = str(export_voc_test(ctx.dir() / "test", ctx.dir() / "voc_test_results.tar",
                                                     test.ids, test.meta.num_classes))
    return result


@stage("eval_seg", sections=(), needs=("infer_seg",), label="segmentation (val)", reads=("val_split",),
       masks=("val_split",))
def run_eval_seg(ctx: Context) -> dict:
    """Segmentation metrics on the val split, and the fit: agreement with the training masks."""
    val = ctx.split("val_split")
    meta = val.meta
    scores = _score(val.ids, lambda i: ctx.dir("infer_seg") / "val" / f"{i}.png", val.mask_path, meta)
    metrics = {k: scores[k] for k in ("Acc", "Acc_class", "mIoU", "fwIoU", "per_class")}
    fit = fit_ids(ctx)
    if fit:
        metrics["fit"] = _fit(ctx, fit, meta)
    return {"images": len(val.ids), "metrics": metrics}


def _fit(ctx: Context, ids: list[str], meta) -> dict:
    """How well DeepLab learned its training masks: mIoU of its predictions on ``ids`` against the masks it was
    trained on (no ground truth involved) and, where the eval split has ground truth for them, against it."""
    pred = lambda i: ctx.dir("infer_seg") / "train" / f"{i}.png"  # noqa: E731
    masks = mask_source(ctx)
    fit = {"images": len(ids),
           "agreement": _score(ids, pred, lambda i: masks / f"{i}.png", meta)["mIoU"]}
    if ctx.cfg.dataset.eval_split:
        truth = ctx.split("eval_split")
        with_gt = set(truth.ids)
        if truth.has_masks() and all(i in with_gt for i in ids):
            fit["gt"] = _score(ids, pred, truth.mask_path, meta)["mIoU"]
    return fit


def _score(ids: list[str], pred_path, truth_path, meta) -> dict:
    """Confusion-matrix scores of the predictions against ``truth_path`` masks (ignore pixels skipped)."""
    from salmask.io import read_mask
    from salmask.metrics.confusion import ConfusionMatrix

    cm = ConfusionMatrix(meta.num_classes)
    for i in dist.shard(ids):
        gt = read_mask(truth_path(i), meta.num_classes, meta.ignore_index)
        cm.update(read_mask(pred_path(i)), gt, name=i)
    return cm.all_reduce().scores(meta.classes)
