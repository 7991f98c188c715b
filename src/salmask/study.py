"""``salmask study``: a preset's whole pipeline plus SBE's ablation (:mod:`salmask.variants`), one table.

The main run goes to ``work_dir``; each variant to ``{work_dir}/ablation/{name}``, where it runs the stages
on the way to ``eval_pseudo`` whose stage hash its overrides change and links the main run's folders of the
others. What is reused follows from the hashes: a linked folder holds what the variant's own settings
would have produced. A variant that changes no hash is the main run's row, not run twice.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

from salmask.config import load_config
from salmask.errors import ConfigError
from salmask.io import write_json
from salmask.pipeline import absolute_paths, plan_problems, planned_stages, run_pipeline
from salmask.preflight import raise_problems
from salmask.registry import STAGES, Context
from salmask.report.html import write_report
from salmask.report.sources import saliency_entries
from salmask.summary import build_summary, format_summary, pseudo_metrics, stage_seconds
from salmask.utils import dist
from salmask.utils.lock import work_dir_lock
from salmask.variants import ABLATIONS

VARIANT_TARGET = "eval_pseudo"
"""The stage a variant runs up to: the ablation compares pseudo masks."""


def run_study(preset: str, overrides: Sequence[str] = (), *, work_dir: Path | None = None,
              ablations: Sequence[str] = tuple(ABLATIONS), smoke: bool = False, title: str | None = None) -> dict:
    """Run the main pipeline and each variant of ``ablations``; print the table, write ``summary.json``
    (with each stage's wall time) and ``report.html``; return the summary."""
    start = time.perf_counter()
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise ConfigError(f"unknown ablation {unknown[0]!r}; choices: {', '.join(ABLATIONS)}")
    work_dir = Path(work_dir or load_config(preset, overrides).work_dir).expanduser().resolve()
    base = [*overrides, f"work_dir={work_dir}"]
    cfg = load_config(preset, base)
    dist.init_distributed(Context(cfg, work_dir).device)
    main_hashes = stage_hashes(cfg)
    plans: dict[str, tuple[DictConfig, list[str], list[str]]] = {}
    for name in ablations:
        vcfg = load_config(preset, [*base, f"work_dir={work_dir / 'ablation' / name}", *ABLATIONS[name].overrides])
        hashes = stage_hashes(vcfg)
        path = upstream_of(vcfg, VARIANT_TARGET)
        own = [st for st in path if hashes[st] != main_hashes.get(st)]
        if own:
            plans[name] = (vcfg, own, [st for st in path if st not in own])
    with work_dir_lock(work_dir):
        problems = plan_problems(cfg)
        for vcfg, own, reused in plans.values():
            problems += plan_problems(vcfg, own, before=reused)
        raise_problems(problems)
        results = run_pipeline(cfg, preflight=False)
        variants = {}
        for name in ablations:
            if name not in plans:
                variants[name] = {**results, "same_as_main": True}
                continue
            vcfg, own, reused = plans[name]
            vdir = work_dir / "ablation" / name
            for st in reused:
                _link(work_dir / st, vdir / st)
            variants[name] = run_pipeline(vcfg, stages=own, preflight=False)
    summary = build_summary(results, {n: pseudo_metrics(r) for n, r in variants.items()}, smoke=smoke)
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


def stage_hashes(cfg: DictConfig) -> dict[str, str]:
    """The stage hash of every stage ``cfg`` enables."""
    ctx = Context(absolute_paths(cfg), Path(cfg.work_dir).expanduser().resolve())
    planned_stages(ctx, [], force=False)
    return ctx.hashes


def upstream_of(cfg: DictConfig, target: str) -> list[str]:
    """``target`` and every enabled stage it depends on, in pipeline order."""
    wanted, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name not in wanted and STAGES[name].enabled(cfg):
            wanted.add(name)
            todo.extend(STAGES[name].requires(cfg))
    return [name for name in STAGES if name in wanted]


def _link(src: Path, dst: Path) -> None:
    if not src.exists() or dst.is_symlink() or dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst, target_is_directory=True)
