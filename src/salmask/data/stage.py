"""Dataset stages: ``generate`` (the synthetic default dataset, ``dataset.kind=synthetic`` only) and
``coco_masks`` (COCO read from its official JSON annotations: split index and evaluation-mask cache)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from salmask.registry import Context, stage
from salmask.utils import dist


@stage("generate", sections=(), enabled=lambda cfg: cfg.dataset.kind == "synthetic", label="synthetic dataset")
def run_generate(ctx: Context) -> dict:
    """Generate the synthetic WSSS set and its salient-object set under the work directory."""
    from salmask.data.synthetic import generate

    s = ctx.cfg.dataset.synthetic
    root = Path(ctx.cfg.dataset.root) if ctx.cfg.dataset.root else ctx.work_dir / "data"
    if dist.is_main():
        generate(root, seed=s.seed, image_size=s.image_size, n_train=s.n_train, n_val=s.n_val, n_sod=s.n_sod)
    dist.barrier()
    return {"root": str(root)}


def _coco_splits(cfg: DictConfig) -> list[str]:
    """The configured COCO splits that have an official annotation file (read through :mod:`salmask.data.coco`)."""
    from salmask.data.coco import annotation_file

    d = cfg.dataset
    if d.kind != "coco" or not d.root:
        return []
    names = dict.fromkeys(s for s in (d.train_split, d.pseudo_split, d.eval_split, d.val_split) if s)
    return [s for s in names if annotation_file(d.root, str(s)).is_file()]


@stage("coco_masks", sections=(), enabled=lambda cfg: bool(_coco_splits(cfg)), label="COCO masks")
def run_coco_masks(ctx: Context) -> dict:
    """COCO from its JSON annotations: index the splits, rasterise the evaluation masks once (cached)."""
    from salmask.data.coco import cache_split

    d = ctx.cfg.dataset
    return {"splits": {s: cache_split(d.root, s, ctx.work_dir, d.max_images, masks=s in (d.eval_split, d.val_split))
                       for s in _coco_splits(ctx.cfg)}}
