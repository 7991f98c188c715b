"""``salmask demo``: the whole pipeline on the synthetic default, plus SBE's ablation (:mod:`salmask.study`).

The main run is the ``demo`` preset (SBE labels + SBE loss + RGB-SOD saliency + Selector + DeepLab-v3+).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from salmask.study import run_study
from salmask.variants import ABLATIONS

QUICK = (
    "dataset.synthetic.image_size=96", "dataset.synthetic.n_train=64", "dataset.synthetic.n_val=16",
    "dataset.synthetic.n_sod=64", "cam.epochs=6", "cam.crop=96", "cam.resize_long=[80,112]", "sod.epochs=4",
    "boundary.epochs=3", "seg.iterations=40", "seg.checkpoint_every=20",
)


def run_demo(work_dir: Path, *, quick: bool = False, overrides: Sequence[str] = (),
             ablation: bool = True) -> dict:
    """Run the ``demo`` preset (``quick``: the smoke settings) and its ablation, print the table, write
    ``summary.json`` and ``report.html``; return the summary."""
    work_dir = work_dir.expanduser().resolve()
    return run_study("demo", [f"dataset.root={work_dir / 'data'}", *(QUICK if quick else ()), *overrides],
                     work_dir=work_dir, ablations=tuple(ABLATIONS) if ablation else (), smoke=quick,
                     title=f"demo{' --quick' if quick else ''}")
