"""salmask: saliency-guided pseudo masks for weakly-supervised semantic segmentation.

The pipeline runs from the ``salmask`` command line; its parts are these functions (numpy arrays unless
a docstring says torch too; shapes and ranges in each docstring):

* ``read_image(path)`` -> RGB uint8 [H,W,3]
* ``class_activation_maps(image, checkpoint, keys)`` -> CAMs [K,H/4,W/4] and [K,H,W]
* ``boundary_map(image, checkpoint)`` -> boundary [H/4,W/4] in [0,1]
* ``saliency_map(image)`` -> training-free saliency [H,W] in [0,1]
* ``boundary_labels(cams, saliency, keys)`` -> BES/SBE boundary label codes [H,W]
* ``random_walk(cams, boundary, *, beta, exp_times, radius)`` -> the exact walk, sparse, O(pixels) memory
* ``pseudo_masks(cams, boundary, keys, *, saliency, bg_score)`` -> class-id mask [H,W] and soft scores [K,H,W]
  (``bg_score="auto"``, the default, chooses it from the saliency maps, as the pipeline does)
* ``select_masks(pseudo, saliency, labels)`` -> the Salient Object Selector on arrays or folders
* ``background_score(scores, saliency)`` -> the walk's background score chosen without ground truth
* ``segment(image, checkpoint)`` -> class-id mask [H,W] from a trained DeepLab
* ``load(work_dir)`` -> a :class:`Predictor` whose ``cams``, ``boundary``, ``pseudo_mask`` and ``segment``
  reuse a run's networks, each loaded once
* ``segmentation_metrics(pred, gt)``, ``sod_metrics(pred, gt)`` -> metric dicts
* ``run(preset, **overrides)`` -> the pipeline's summary, artefacts on disk

``salmask.compat.propagate_to_edge`` is a drop-in for IRNet's/BES's dense walk of the same name. Errors a
caller can fix are :class:`SalmaskError` (bad arguments: ``salmask.errors.ArgumentError``, also a
``ValueError``). ``import salmask`` stays light: the functions load torch on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from salmask.errors import SalmaskError

__all__ = [
    "read_image", "class_activation_maps", "boundary_map", "saliency_map", "boundary_labels", "random_walk",
    "pseudo_masks", "background_score", "select_masks", "segment", "segmentation_metrics", "sod_metrics", "run",
    "load", "Predictor", "SalmaskError",
]
_LAZY = {name: "salmask.api" for name in __all__ if name != "SalmaskError"}
_SUBMODULES = ("api", "compat")

if TYPE_CHECKING:
    from salmask.api import (Predictor, background_score, boundary_labels, boundary_map, class_activation_maps,
                             load, pseudo_masks, random_walk, read_image, run, saliency_map, segment,
                             segmentation_metrics, select_masks, sod_metrics)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"salmask.{name}")
    raise AttributeError(f"module 'salmask' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
