"""Stages ``train_sod``, ``saliency`` and ``eval_sod``: one saliency map in [0,1] per image.

Sources: ``precomputed`` (grayscale PNGs, SBE's ``{voc_root}/Sal/{id}.png`` by default), ``classic``
(MB+ minimum-barrier saliency, no weights), ``rgbsod`` (the seed's network, trained by ``train_sod``) and
``onnx`` (a pretrained ONNX salient-object model such as U²-NetP, ``saliency.model``).
Maps are written as ``saliency/{id}.png`` at the image's size. An all-zero map is kept and listed in the
manifest (``all_zero``); SBE's saliency steps are then skipped for that image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from omegaconf import OmegaConf

from salmask.errors import ConfigError, InputError
from salmask.io import read_gray, read_image, write_gray
from salmask.registry import Context, stage
from salmask.saliency.names import source_fields
from salmask.stage_utils import image_size, loop, prefetch, todo
from salmask.utils import dist
from salmask.utils.log import logger, progress_bar
from salmask.models.build import load_network, save_network
from salmask.models.rgbsod import RGBSOD
from salmask.utils.train import seed_everything


def sod_roots(ctx: Context) -> tuple[Path | None, Path | None]:
    """(training root, held-out root) in DUTS layout; the synthetic set brings its own."""
    s = ctx.cfg.sod
    if ctx.cfg.dataset.kind == "synthetic":
        data = Path(ctx.cfg.dataset.root) if ctx.cfg.dataset.root else ctx.work_dir / "data"
        return Path(s.data_root or data / "SOD"), Path(s.test_root or data / "SOD_test")
    return (Path(s.data_root) if s.data_root else None), (Path(s.test_root) if s.test_root else None)


def rgbsod_args(ctx: Context) -> dict:
    """The RGB-SOD network's build arguments from the ``sod`` config section."""
    s = ctx.cfg.sod
    return {"encoder": s.encoder, "img_size": s.img_size, "encoder_kwargs": OmegaConf.to_container(s.encoder_kwargs),
            "decoder_channels": s.decoder_channels}


def load_rgbsod(ctx: Context):
    return load_network(ctx.dir("train_sod") / "model.pt", ctx.device, expect="rgbsod", defaults=rgbsod_args(ctx))


@stage("train_sod", sections=("sod",), needs=("generate",), enabled=lambda cfg: cfg.saliency.source == "rgbsod",
       label="RGB-SOD network", checkpoint_bytes=400e6, model=("sod", "encoder"))
def run_train_sod(ctx: Context) -> dict:
    """Train the RGB-SOD saliency network on a DUTS-layout folder."""
    from salmask.saliency.rgbsod import train_rgbsod

    root, _ = sod_roots(ctx)
    if root is None:
        raise ConfigError("saliency.source=rgbsod needs sod.data_root (a DUTS-layout folder: Images/, Masks/)")
    s = ctx.cfg.sod
    seed_everything(ctx.cfg.seed)
    model = RGBSOD(**rgbsod_args(ctx), pretrained=s.pretrained)
    ctx.used("tensorboard", bool(ctx.cfg.tensorboard))
    history = train_rgbsod(model, root, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, lr_step=s.lr_step,
                           lr_gamma=s.lr_gamma, img_size=s.img_size, device=ctx.device, out_dir=ctx.dir(),
                           num_workers=dist.loader_workers(ctx.cfg.num_workers), seed=ctx.cfg.seed, amp=ctx.amp,
                           tensorboard=ctx.cfg.tensorboard)
    save_network(ctx.dir() / "model.pt", model, "rgbsod", rgbsod_args(ctx))
    return {"steps": len(history), "final_loss": history[-1]["loss"] if history else None}


SOURCES = ("precomputed", "classic", "rgbsod", "onnx")
Predict = Callable[[list[np.ndarray]], list[np.ndarray]]


def predictor(ctx: Context, source: str) -> tuple[Predict, int]:
    """A model source as (RGB uint8 images [H,W,3] → maps float32 [H,W] in [0,1], images per call)."""
    if source == "rgbsod":
        from salmask.saliency.rgbsod import predict_batch

        model = load_rgbsod(ctx)
        return (lambda arrays: predict_batch(model, arrays, img_size=ctx.cfg.sod.img_size, device=ctx.device)), 16
    if source == "onnx":
        from salmask.saliency.onnx_sod import onnx_from_config

        model = onnx_from_config(ctx.cfg.saliency, ctx.device)
        ctx.used("onnx_provider", model.session.get_providers()[0])
        return model.predict, model.batch_size
    if source == "classic":
        from salmask.saliency.classic import classic_saliency

        method = ctx.cfg.saliency.classic_method
        return (lambda arrays: [classic_saliency(a, method=method) for a in arrays]), 1
    raise ConfigError(f"saliency.source {source!r} is not one of {', '.join(SOURCES)}")


def predict_files(ids: Sequence[str], path_of: Callable[[str], Path], predict: Predict, batch: int,
                  desc: str = "saliency") -> Iterator[tuple[str, np.ndarray]]:
    """(id, map) for each id, ``batch`` images per call while the next ones load, with a progress bar."""
    bar = progress_bar(desc, total=len(ids))
    chunks = [list(ids[j:j + batch]) for j in range(0, len(ids), batch)]
    for chunk, arrays in prefetch(chunks, lambda c: [read_image(path_of(i)) for i in c]):
        yield from zip(chunk, predict(arrays))
        bar.update(len(chunk))
    bar.close()


def _precomputed_dir(ctx: Context, images) -> Path:
    if ctx.cfg.saliency.dir:
        return Path(ctx.cfg.saliency.dir).expanduser()
    if images.root is not None and (images.root / "Sal").is_dir():
        return images.root / "Sal"
    raise ConfigError("saliency.source=precomputed needs saliency.dir (default {voc_root}/Sal is absent)")


@stage("saliency", sections=("saliency", "sod"), needs=("train_sod",), label="saliency maps", reads=("pseudo_split",),
       bytes_per_pixel=0.4)
def run_saliency(ctx: Context) -> dict:
    """One saliency map per image of the pseudo-mask split, from the configured source."""
    images = ctx.split("pseudo_split", need_labels=False)
    src = ctx.cfg.saliency.source
    out = ctx.dir()
    ids = todo(images.ids, lambda i: out / f"{i}.png")
    flags = {"all_zero": [], "missing": []}
    zb = ctx.cfg.saliency.zero_below
    produced_by = source_fields(ctx.cfg, src)
    if src == "precomputed":
        folder = _precomputed_dir(ctx, images)
        produced_by["dir"] = str(folder)
        for i in loop(ids, "saliency"):
            path = folder / f"{i}.png"
            hw = image_size(images.image_path(i))
            if not path.is_file():
                if not ctx.cfg.saliency.allow_missing:
                    raise InputError(path, "saliency map missing (saliency.allow_missing=true uses an "
                                           "all-zero map instead)")
                logger.warning("saliency: %s missing, using an all-zero map", path)
                flags["missing"].append(i)
                _write(out, i, np.zeros(hw, np.float32), flags, zb)
                continue
            sal = read_gray(path)
            if sal.shape != hw:
                raise InputError(path, f"saliency size {sal.shape[1]}x{sal.shape[0]} differs from the "
                                       f"image's {hw[1]}x{hw[0]}")
            _write(out, i, sal, flags, zb)
    else:
        predict, batch = predictor(ctx, src)
        for i, m in predict_files(ids, images.image_path, predict, batch):
            _write(out, i, m, flags, zb)
    return {"images": len(images.ids), **produced_by,
            "all_zero": _gather(out, "all_zero", flags["all_zero"]),
            "missing": _gather(out, "missing", flags["missing"])}


def _write(out: Path, image_id: str, sal: np.ndarray, flags: dict, zero_below: float) -> None:
    if not np.isfinite(sal).all():
        raise InputError(out / f"{image_id}.png", "saliency map has NaN values")
    sal = np.where(sal < zero_below, 0.0, sal)
    if float(sal.max(initial=0.0)) <= 0.0:
        logger.warning("saliency: %s is all zero (kept; SBE's saliency steps are skipped for it)", image_id)
        flags["all_zero"].append(image_id)
    write_gray(out / f"{image_id}.png", sal)


def _gather(out: Path, name: str, items: list[str]) -> list[str]:
    """Every rank's ``items``, this run's and an interrupted earlier one's (small JSON files, so no
    pickled objects cross processes)."""
    from salmask.io import read_json, write_json

    mine = out / f".{name}.rank{dist.rank()}.json"
    earlier = read_json(mine) if mine.is_file() else []  # images flagged before an interruption
    write_json(mine, sorted(set(earlier) | set(items)))
    dist.barrier()
    return sorted({x for f in out.glob(f".{name}.rank*.json") for x in read_json(f)})


@stage("eval_sod", sections=("saliency", "sod"), needs=("train_sod",),
       enabled=lambda cfg: cfg.dataset.kind == "synthetic" or bool(cfg.sod.test_root), label="saliency")
def run_eval_sod(ctx: Context) -> dict:
    """SOD metrics (MAE, F, S, E) of the classic source and of the configured model source (RGB-SOD, ONNX)."""
    from salmask.data.duts import list_duts_pairs
    from salmask.metrics.sod import score_sod_folders

    _, test_root = sod_roots(ctx)
    if test_root is None:
        raise ConfigError("eval_sod needs sod.test_root (a DUTS-layout folder)")
    pairs = list_duts_pairs(test_root)
    model_source = ctx.cfg.saliency.source
    sources = ["classic"] + ([model_source] if model_source in ("rgbsod", "onnx") else [])
    by_id = {p[0].stem: p[0] for p in pairs}
    metrics = {}
    for src in sources:
        folder = ctx.dir() / src
        mine = todo(list(by_id), lambda i: folder / f"{i}.png")
        if mine:
            predict, batch = predictor(ctx, src)
            for i, m in predict_files(mine, by_id.__getitem__, predict, batch, desc=f"eval_sod {src}"):
                write_gray(folder / f"{i}.png", m)
        dist.barrier()
        metrics[src] = {k: v for k, v in score_sod_folders(folder, test_root / "Masks").items()}
        logger.info("eval_sod %-8s %s", src, "  ".join(f"{k}={v:.4f}" for k, v in metrics[src].items()
                                                        if isinstance(v, float)))
    return {"images": len(pairs), "metrics": metrics,
            "sources": {src: source_fields(ctx.cfg, src) for src in sources}}
