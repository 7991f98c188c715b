"""Sweep of Algorithm 1's replacement threshold: the shape of seed 2's Table 3.

For each threshold α (used as t0; t1 defaults to 0 so every class gets the same threshold) the single-class
images with o > α (o > α + t1 for non-salient classes) get the saliency replacement, and Acc, Acc_class,
mIoU and fwIoU are measured on the single-class subset and on all images. α = 0 replaces every
single-class image whose binarised saliency overlaps its mask; α = 1 (t1 = 0) replaces none, so its row is
the input masks' own scores.

Everything happens in memory from one pass over the folders (:func:`salmask.select.sos.scan`): each image
leaves the sparse confusion of its input mask and of its replacement against the ground truth, and a row
is a sum of one or the other per image. No mask is written. Only images with a ground-truth PNG count;
pseudo masks are scored with 255 as background. The inputs and definitions are those of
:mod:`salmask.select.sos`.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterable, Sequence

from salmask.errors import InputError
from salmask.io import write_bytes_atomic
from salmask.select.sos import (DEFAULT_ETA, METRICS, Folders, Labels, PathLike, confusion, salience,
                                salient_set, scan, sep_replaces)

DEFAULT_THRESHOLDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def sweep(pseudo_dir: PathLike, saliency_dir: PathLike, gt_dir: PathLike, *, num_classes: int,
          thresholds: Iterable[float] = DEFAULT_THRESHOLDS, t1: float = 0.0, eta: float = DEFAULT_ETA,
          salient_classes: Iterable[int] | None = None, sal_thres: float = 0.5,
          labels: Labels | PathLike | None = None, class_names: Sequence[str] | None = None,
          ids: Iterable[str] | None = None, allow_missing: bool = False,
          progress: bool = False) -> list[dict]:
    """One row per threshold: ``{alpha, replaced, single_class: {Acc, Acc_class, mIoU, fwIoU, images},
    all: {...}}`` (percent; ``replaced`` counts scored images)."""
    thresholds = [float(a) for a in thresholds]
    if not thresholds or not all(math.isfinite(a) and a >= 0 for a in thresholds):
        raise ValueError(f"sweep thresholds must be finite numbers >= 0, got {thresholds}")
    if not (math.isfinite(t1) and t1 >= 0):
        raise ValueError(f"sweep t1 must be a finite number >= 0, got {t1}")
    folders = Folders.open(pseudo_dir, saliency_dir, num_classes=num_classes, labels=labels,
                           class_names=class_names, ids=ids, gt_dir=gt_dir)
    records = scan(folders, sal_thres=sal_thres, allow_missing=allow_missing, progress=progress)
    scored = [r for r in records if r.keep is not None]
    if not scored:
        raise InputError(gt_dir, f"no ground-truth mask for any of the {len(records)} images")
    salient = salient_set(salience(records)[1], eta, salient_classes)
    single = [r for r in scored if r.cls is not None]
    others = confusion((r.keep for r in scored if r.cls is None), num_classes).hist

    rows = []
    for alpha in thresholds:
        swap = [r.status == "ok" and sep_replaces(r.o, r.cls in salient, alpha, t1) for r in single]
        cm = confusion((r.swap if s else r.keep for r, s in zip(single, swap)), num_classes)
        row = {"alpha": alpha, "replaced": sum(swap), "single_class": _headline(cm, len(single))}
        cm.hist += others
        row["all"] = _headline(cm, len(scored))
        rows.append(row)
    return rows


def _headline(cm, images: int) -> dict:
    scores = cm.scores()
    return {**{k: scores[k] for k in METRICS}, "images": images}


def format_sweep_table(rows: Sequence[dict]) -> str:
    """The sweep as a plain-text table: α, replaced, then the four metrics for each subset."""
    if not rows:
        raise ValueError("no sweep rows to format")
    metrics = "".join(f"{k:>10}" for k in METRICS)
    lines = [f"{'':16}{'single-class (' + str(rows[0]['single_class']['images']) + ' images)':<40}"
             f"  {'all (' + str(rows[0]['all']['images']) + ' images)'}",
             f"{'alpha':>6}{'replaced':>10}{metrics}  {metrics}"]
    for r in rows:
        vals = ["".join(f"{r[s][k]:>10.2f}" for k in METRICS) for s in ("single_class", "all")]
        lines.append(f"{r['alpha']:>6.2f}{r['replaced']:>10}{vals[0]}  {vals[1]}")
    return "\n".join(lines)


def plot_sweep(rows: Sequence[dict], png_path: PathLike) -> Path:
    """Plot the four metrics against α, one panel per subset, to a PNG (written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("no sweep rows to plot")
    fig = Figure(figsize=(10, 4), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    alphas = [r["alpha"] for r in rows]
    panels = (("single_class", "single-class images"), ("all", "all images"))
    for ax, (subset, title) in zip(fig.subplots(1, 2), panels):
        for k in METRICS:
            ax.plot(alphas, [r[subset][k] for r in rows], marker="o", label=k)
        ax.set_title(f"{title} ({rows[0][subset]['images']})")
        ax.set_xlabel("replacement threshold α (t0)")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=len(METRICS))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(png_path, buf.getvalue())
    return Path(png_path)
