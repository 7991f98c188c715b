"""Importing this module registers every stage, in pipeline order."""
from salmask.data import stage as _data  # noqa: F401  generate
from salmask.cam import stage as _cam  # noqa: F401  train_cam, make_cam, eval_cam
from salmask.saliency import stage as _saliency  # noqa: F401  train_sod, saliency, eval_sod
from salmask.boundary import stage as _boundary  # noqa: F401  make_boundary_labels, train_boundary, make_boundary
from salmask.refine import stage as _refine  # noqa: F401  make_pseudo, eval_pseudo
from salmask.select import stage as _select  # noqa: F401  select, eval_select
from salmask.seg import stage as _seg  # noqa: F401  train_seg, infer_seg, eval_seg
