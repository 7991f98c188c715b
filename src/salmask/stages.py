"""Importing this module registers every stage, in pipeline order: one import line per stage module, in order."""
from types import ModuleType

from salmask.registry import order_stages

from salmask.data import stage as _data  # generate, coco_masks  # noqa: E402,I001  (the order is the pipeline's)
from salmask.cam import stage as _cam  # train_cam, make_cam, eval_cam
from salmask.saliency import stage as _saliency  # train_sod, saliency, eval_sod
from salmask.boundary import stage as _boundary  # make_boundary_labels, train_boundary, make_boundary
from salmask.refine import stage as _refine  # make_pseudo, eval_pseudo
from salmask.select import stage as _select  # select, eval_select
from salmask.seg import stage as _seg  # train_seg, infer_seg, eval_seg

PIPELINE = tuple(m for m in dict(globals()).values() if isinstance(m, ModuleType) and m.__name__.endswith(".stage"))
"""The stage modules above, in the order of their imports; each declares its stages in order."""

order_stages([m.__name__ for m in PIPELINE])
