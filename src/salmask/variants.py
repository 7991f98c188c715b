"""SBE's ablation: the study's variants, each a name, its label in tables and reports, and its overrides.

A variant reruns, in ``{work_dir}/ablation/{name}``, the stages on the way to ``eval_pseudo`` whose hash its
overrides change, and reuses the main run's folders of the others (:mod:`salmask.study`). BES has no
saliency, so its walk reads the learned boundary map alone; every variant keeps the main run's background
score rule.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    overrides: tuple[str, ...]


ABLATIONS: dict[str, Variant] = {v.name: v for v in (
    Variant("bes", "BES labels + BES loss",
            ("boundary_labels.use_saliency=false", "boundary.loss=bes", "walk.boundary=learned")),
    Variant("sbe_labels_bes_loss", "SBE labels + BES loss", ("boundary.loss=bes",)),
    Variant("sbe_classic_saliency", "SBE, classic saliency", ("saliency.source=classic",)),
    Variant("walk_learned", "SBE, walk in learned edges", ("walk.boundary=learned",)),
    Variant("walk_saliency", "SBE, walk in saliency edges", ("walk.boundary=saliency",)),
    Variant("walk_both", "SBE, walk in both edges", ("walk.boundary=both",)),
)}


def variant_label(name: str) -> str:
    """The table label of variant ``name`` (the name itself for a folder no variant declares)."""
    return ABLATIONS[name].label if name in ABLATIONS else name
