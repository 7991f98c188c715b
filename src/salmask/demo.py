"""``salmask demo``: the whole pipeline on the synthetic default, plus an ablation of SBE's parts.

The main run is the ``demo`` preset (SBE labels + SBE loss + RGB-SOD saliency + Selector + DeepLab-v3+).
Ablation variants rerun only the boundary stages and the walk in ``{work_dir}/ablation/{name}``, reusing
the main run's CAMs (and saliency, where it is the same) through symlinks — the stage hashes guarantee
the reused artefacts are the ones those settings would produce.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf

from salmask.config import load_config
from salmask.io import write_json
from salmask.errors import ConfigError
from salmask.pipeline import Context, plan_problems, run_pipeline
from salmask.preflight import raise_problems
from salmask.utils.lock import work_dir_lock
from salmask.report.html import ABLATION_LABELS, HEADLINE, SMOKE_BANNER, write_report
from salmask.report.sources import saliency_entries
from salmask.saliency.names import saliency_name
from salmask.utils import dist

QUICK = (
    "dataset.synthetic.image_size=96", "dataset.synthetic.n_train=64", "dataset.synthetic.n_val=16",
    "dataset.synthetic.n_sod=64", "cam.epochs=6", "cam.crop=96", "cam.resize_long=[80,112]", "sod.epochs=4",
    "boundary.epochs=3", "seg.iterations=40", "seg.checkpoint_every=20",
)

# name -> (overrides, upstream stages reused from the main run); a reused stage whose hash would differ
# under the variant's settings is reported as incomplete, never rerun in the main run's folder. BES has no
# saliency, so its walk reads the learned boundary map alone; every variant keeps the main run's background
# score rule. A walk variant equal to the main run's setting is the main run's row, not run twice.
LEARNED_BOUNDARY = ("saliency", "make_boundary_labels", "train_boundary", "make_boundary")
ABLATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bes": (("boundary_labels.use_saliency=false", "boundary.loss=bes", "walk.boundary=learned"), ("saliency",)),
    "sbe_labels_bes_loss": (("boundary.loss=bes",), ("saliency", "make_boundary_labels")),
    "sbe_classic_saliency": (("saliency.source=classic",), ()),
    "walk_learned": (("walk.boundary=learned",), LEARNED_BOUNDARY),
    "walk_saliency": (("walk.boundary=saliency",), LEARNED_BOUNDARY),
    "walk_both": (("walk.boundary=both",), LEARNED_BOUNDARY),
}
UPSTREAM = ("generate", "coco_masks", "train_cam", "make_cam", "eval_cam", "train_sod", "labels")
STAGES_BEFORE_VARIANTS = ("generate", "coco_masks", "train_cam", "make_cam", "train_sod")
"""What the main run produces before the variants run (their pre-flight does not look for it yet)."""
BOUNDARY_STAGES = ("saliency", "make_boundary_labels", "train_boundary", "make_boundary", "make_pseudo",
                   "eval_pseudo")


def run_demo(work_dir: Path, *, quick: bool = False, overrides: Sequence[str] = (),
             ablation: bool = True) -> dict:
    """Run the ``demo`` preset (``quick``: the smoke settings) and its ablation, print the table, write
    ``summary.json`` and ``report.html``; return the summary."""
    work_dir = work_dir.expanduser().resolve()
    return run_study("demo", [f"dataset.root={work_dir / 'data'}", *(QUICK if quick else ()), *overrides],
                     work_dir=work_dir, ablations=tuple(ABLATIONS) if ablation else (), smoke=quick,
                     title=f"demo{' --quick' if quick else ''}")


def run_study(preset: str, overrides: Sequence[str] = (), *, work_dir: Path | None = None,
              ablations: Sequence[str] = tuple(ABLATIONS), smoke: bool = False, title: str | None = None) -> dict:
    """A preset's whole pipeline plus SBE's ablation, one table: the main run in ``work_dir``, each variant
    of :data:`ABLATIONS` in ``{work_dir}/ablation/{name}``, rerunning only the boundary stages and the
    walk and reusing the main run's CAMs (and saliency, where it is the same) through symlinks — the stage
    hashes guarantee the reused artefacts are the ones those settings would produce. Prints the table,
    writes ``summary.json`` (with each stage's wall time) and ``report.html``; returns the summary."""
    start = time.perf_counter()
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise ConfigError(f"unknown ablation {unknown[0]!r}; choices: {', '.join(ABLATIONS)}")
    work_dir = Path(work_dir or load_config(preset, overrides).work_dir).expanduser().resolve()
    base = [*overrides, f"work_dir={work_dir}"]
    cfg = load_config(preset, base)
    dist.init_distributed(Context(cfg, work_dir).device)
    plans = {name: (load_config(preset, [*base, f"work_dir={work_dir / 'ablation' / name}", *ABLATIONS[name][0]]),
                    [s for s in BOUNDARY_STAGES if s not in ABLATIONS[name][1]])
             for name in ablations if not _same_as_main(cfg, name)}
    with work_dir_lock(work_dir):
        problems = plan_problems(cfg)
        for vcfg, vstages in plans.values():
            problems += plan_problems(vcfg, vstages, before=STAGES_BEFORE_VARIANTS)
        raise_problems(problems)
        results = run_pipeline(cfg, preflight=False)
        variants = {}
        for name in ablations:
            if name not in plans:
                variants[name] = {**results, "same_as_main": True}
                continue
            vcfg, vstages = plans[name]
            vdir = work_dir / "ablation" / name
            for st in (*UPSTREAM, *ABLATIONS[name][1]):
                _link(work_dir / st, vdir / st)
            variants[name] = run_pipeline(vcfg, stages=vstages, preflight=False)
    summary = build_summary(results, {n: _pseudo(r) for n, r in variants.items()}, smoke=smoke)
    summary.update(saliency_entries(work_dir))
    summary["seconds"] = stage_seconds(results)
    summary["ablation_seconds"] = {n: stage_seconds(r) for n, r in variants.items() if not r.get("same_as_main")}
    if dist.is_main():
        write_json(work_dir / "summary.json", summary)
        print(format_summary(summary))
        print(f"report: {write_report(work_dir)}")
        print(f"summary: {work_dir / 'summary.json'}")
        minutes, seconds = divmod(round(time.perf_counter() - start), 60)
        print(f"{title or preset} finished in {minutes} min {seconds:02d} s")
    return summary


def _same_as_main(cfg, name: str) -> bool:
    """Whether ablation ``name``'s settings are the main run's already (its row is then the main run's)."""
    return all(str(OmegaConf.select(cfg, k)) == v for k, v in (e.split("=", 1) for e in ABLATIONS[name][0]))


def stage_seconds(results: dict) -> dict[str, float]:
    """Each stage's wall time from a :func:`run_pipeline` result (its manifest's ``seconds``)."""
    return {st: r["seconds"] for st, r in results.items() if isinstance(r, dict) and "seconds" in r}


def _link(src: Path, dst: Path) -> None:
    if not src.exists() or dst.is_symlink() or dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst, target_is_directory=True)



def _pseudo(results: dict) -> dict:
    """A run's pseudo-mask metrics with the background score it used and the sweep's ground-truth best."""
    out = dict(results["eval_pseudo"]["metrics"])
    sweep = results["eval_pseudo"].get("bg_sweep")
    if sweep:
        out["bg"] = {"score": sweep["used"], "auto": "bg_score_auto" in results.get("make_pseudo", {}),
                     "best_score": sweep["best_score"], "best_mIoU": sweep["best_mIoU"]}
    if results.get("same_as_main"):
        out["same_as_main"] = True
    return out


def _pick(m: dict) -> dict:
    out = {k: m[k] for k in HEADLINE if k in m}
    out.update({k: m[k] for k in ("bg", "same_as_main") if k in m})
    if "single_class" in m:
        out["single_class"] = {k: m["single_class"][k] for k in (*HEADLINE, "images") if k in m["single_class"]}
    return out


def build_summary(results: dict, ablations: dict, smoke: bool = False) -> dict:
    """One object per evaluated stage, metrics in percent (SOD metrics as fractions); ``smoke`` marks a
    ``--quick`` run, whose figures mean nothing."""
    s: dict = {"smoke": True} if smoke else {}
    if "eval_cam" in results:
        m = results["eval_cam"]["metrics"]
        s["cam"] = {**_pick(m), "threshold": m["threshold"], "best_threshold": m["best_threshold"],
                    "best_mIoU": m["best_mIoU"]}
    if "eval_sod" in results:
        s["sod"] = results["eval_sod"]["metrics"]
    if "eval_pseudo" in results:
        s["sbe"] = _pick(_pseudo(results))
        if results["eval_pseudo"]["metrics"].get("crf"):
            s["sbe_crf"] = _pick(results["eval_pseudo"]["metrics"]["crf"])
    if "eval_select" in results:
        s["sos"] = _pick(results["eval_select"]["metrics"])
    if "eval_seg" in results:
        m = results["eval_seg"]["metrics"]
        s["seg"] = {**_pick(m), **({"fit": m["fit"]} if "fit" in m else {})}
    if ablations:
        s["ablation"] = {name: _pick(m) for name, m in ablations.items()}
    return s


def _saliency_label(s: dict) -> str:
    """The name of the summary's saliency: its recorded entry; a summary written before entries existed
    has only the source (``saliency_source``), so its detail shows as not recorded."""
    if isinstance(s.get("saliency"), dict) and s["saliency"].get("name"):
        return str(s["saliency"]["name"])
    return saliency_name({"source": s["saliency_source"]} if s.get("saliency_source") else None)


def _sod_label(s: dict, source: str) -> str:
    entry = s.get("sod_sources", {}).get(source)
    return str(entry["name"]) if isinstance(entry, dict) and entry.get("name") else saliency_name({"source": source})


def format_summary(s: dict) -> str:
    rows = [("CAM (train, bg t=%.2f)" % s["cam"]["threshold"], s["cam"])] if "cam" in s else []
    for name, m in s.get("ablation", {}).items():
        rows.append((f"pseudo: {ABLATION_LABELS.get(name, name)}{' (= SBE)' if m.get('same_as_main') else ''}", m))
    if "sbe" in s:
        rows.append((f"pseudo: SBE ({_saliency_label(s)})", s["sbe"]))
        bg = s["sbe"].get("bg")
        if bg:
            rows.append((f"  SBE at the GT-best bg {bg['best_score']:.2f}", {"mIoU": bg["best_mIoU"]}))
    if "sbe_crf" in s:
        rows.append(("pseudo: SBE + dense CRF (walk.crf)", s["sbe_crf"]))
    if "sos" in s:
        rows.append(("pseudo: SBE + Selector", s["sos"]))
    if "seg" in s:
        rows.append(("segmentation (val)", s["seg"]))
        fit = s["seg"].get("fit")
        if fit:
            rows.append((f"  its training masks, {fit['images']} train images", {"mIoU": fit["agreement"]}))
            if "gt" in fit:
                rows.append(("  the GT of those training images", {"mIoU": fit["gt"]}))
    smoke = bool(s.get("smoke"))
    mark = "  smoke" if smoke else ""
    lines = [SMOKE_BANNER] if smoke else []
    lines.append(f"{'stage':<40}{'mIoU':>8}{'Acc':>8}{'Acc_cls':>9}{'fwIoU':>8}{'1-class mIoU':>14}"
                 + ("  run" if smoke else ""))
    for name, m in rows:
        single = m.get("single_class", {}).get("mIoU")
        single_text = "" if single is None else f"{single:.2f}"
        cells = "".join(f"{m[k]:{w}.2f}" if k in m else " " * w for k, w in (("mIoU", 8), ("Acc", 8),
                                                                               ("Acc_class", 9), ("fwIoU", 8)))
        bg = m.get("bg")
        note = f"  bg {bg['score']:.2f}{' auto' if bg['auto'] else ''}" if bg and bg.get("score") is not None else ""
        lines.append(f"{name:<40}{cells}{single_text:>14}{note}{mark}".rstrip())
    for src, m in s.get("sod", {}).items():
        lines.append(f"SOD {_sod_label(s, src):<22} MAE={m['MAE']:.4f} maxF={m['maxF']:.4f} meanF={m['meanF']:.4f} "
                     f"adpF={m['adpF']:.4f} Sm={m['Sm']:.4f} Em={m['Em']:.4f}{mark}")
    if smoke:
        lines.append(SMOKE_BANNER)
    return "\n".join(lines)
