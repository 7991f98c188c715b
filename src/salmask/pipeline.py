"""The orchestrator: runs the registered stages (:mod:`salmask.registry`) in order, each writing under
``{work_dir}/{stage}/``.

A stage is complete when its ``manifest.json`` exists and records the same *stage hash* — a hash of the
config sections the stage reads, of its upstream stages' hashes and of its code version — so changing a
setting (or a release changing what a stage writes) reruns the stage and everything downstream of it, and
nothing else. Per-image stages skip images whose artefact is already on disk (artefacts are written
atomically, so existence means complete); a stage that finds leftovers from a run with a different hash
clears them first.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from omegaconf import DictConfig, OmegaConf

import salmask.stages  # noqa: F401  (registers the stages)
from salmask.config import hash_part, section_hash, to_yaml
from salmask.errors import ConfigError
from salmask.io import read_json, write_bytes_atomic, write_json
from salmask import preflight as pre_flight
from salmask.preflight import check_plan
from salmask.registry import MANIFEST, PROGRESS, STAGES, Context, Stage, has_ground_truth
from salmask.utils import dist
from salmask.utils.lock import work_dir_lock
from salmask.utils.log import logger, setup_logging

def stage_hash(ctx: Context, st: Stage) -> str:
    parts = [hash_part(ctx.cfg, s) for s in st.hashed(ctx.cfg)]
    # Version 1 adds nothing, so the artefacts of runs from before versions existed stay valid.
    version = [f"version {st.version}"] if st.version > 1 else []
    return section_hash(st.name, hash_part(ctx.cfg, "dataset"), ctx.cfg.seed, *parts, *version,
                        *[ctx.hashes.get(n, "") for n in st.requires(ctx.cfg)])


def is_complete(ctx: Context, name: str, h: str) -> bool:
    path = ctx.dir(name) / MANIFEST
    if not path.is_file():
        return False
    try:
        return read_json(path).get("hash") == h
    except Exception:
        return False


def prepare_stage_dir(ctx: Context, name: str, h: str) -> None:
    """Keep per-image leftovers of an interrupted run with the same hash; clear those of another.

    Only rank 0 looks at the folder: ranks deciding on their own could see it mid-creation and then
    disagree on the number of barriers, which deadlocks the next collective.
    """
    d = ctx.dir(name)
    marker = d / PROGRESS
    if dist.is_main():
        if d.exists() and _safe_hash(marker) != h:
            logger.info("%s: clearing outputs of a previous run with other settings", name)
            shutil.rmtree(d)
        for tmp in d.rglob(".*.tmp"):  # partial writes of a killed run, never trusted
            tmp.unlink()
        d.mkdir(parents=True, exist_ok=True)
        write_json(marker, {"hash": h, "started": time.time()})
    dist.barrier()


def _safe_hash(path: Path) -> str | None:
    try:
        return read_json(path).get("hash")
    except Exception:
        return None


PATH_KEYS = ("work_dir", "dataset.root", "dataset.labels", "dataset.images", "dataset.masks", "cam.dir",
             "saliency.dir", "saliency.model", "sod.data_root", "sod.test_root")


def absolute_paths(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` whose path settings are absolute, so the saved config works from anywhere."""
    cfg = cfg.copy()
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value:
            OmegaConf.update(cfg, key, str(Path(str(value)).expanduser().resolve()))
    return cfg


def resolve_stages(cfg: DictConfig, only: Iterable[str] | None) -> list[Stage]:
    if only:
        unknown = [s for s in only if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown stages {unknown}; known: {', '.join(STAGES)}")
        return [STAGES[n] for n in STAGES if n in set(only)]
    return [s for s in STAGES.values() if s.enabled(cfg)]


def run_pipeline(cfg: DictConfig, *, stages: Iterable[str] | None = None, force: bool = False,
                 preflight: bool = True) -> dict[str, Any]:
    """Run the selected stages (all enabled ones by default) in order; returns {stage: manifest}.

    The work dir is locked for the run (:mod:`salmask.utils.lock`); before the first stage starts, the
    stages that will run (selected and not complete) have their inputs checked, every problem reported at
    once (:mod:`salmask.preflight`; ``preflight=False`` skips that, for a caller that checked already).
    """
    work_dir = Path(cfg.work_dir).expanduser().resolve()
    cfg = absolute_paths(cfg)
    ctx = Context(cfg, work_dir)
    dist.init_distributed(ctx.device)
    selected = resolve_stages(cfg, stages)
    with work_dir_lock(work_dir):
        setup_logging(work_dir)
        return _run_locked(ctx, selected, force, preflight)


def planned_stages(ctx: Context, selected: list[Stage], force: bool) -> list[Stage]:
    """The enabled stages in order, with ``ctx.hashes`` filled; of them, those in ``selected`` that will run
    (not complete, or ``force``) are returned."""
    all_enabled = [s for s in STAGES.values() if s.enabled(ctx.cfg) or s in selected]
    for st in all_enabled:
        ctx.hashes[st.name] = stage_hash(ctx, st)
    return [st for st in all_enabled if st in selected and (force or not is_complete(ctx, st.name, ctx.hashes[st.name]))]


def plan_problems(cfg: DictConfig, stages: Iterable[str] | None = None, force: bool = False,
                  before: Iterable[str] = ()) -> list[str]:
    """The pre-flight problems of ``run_pipeline(cfg, stages=stages, force=force)``, without running it;
    ``before``: stages an earlier run of the same command runs first (see :func:`salmask.preflight.check_plan`)."""
    work_dir = Path(cfg.work_dir).expanduser().resolve()
    cfg = absolute_paths(cfg)
    ctx = Context(cfg, work_dir)
    to_run = planned_stages(ctx, resolve_stages(cfg, stages), force)
    return check_plan(cfg, [st.name for st in to_run], work_dir, before)


def _run_locked(ctx: Context, selected: list[Stage], force: bool, preflight: bool) -> dict[str, Any]:
    cfg, work_dir = ctx.cfg, ctx.work_dir
    unscored = [] if has_ground_truth(cfg) else [st.name for st in STAGES.values() if st.masks and st not in selected]
    if unscored:
        logger.info("%s left out: dataset.kind=folder without dataset.masks has no ground truth to score against",
                    ", ".join(unscored))
    to_run = planned_stages(ctx, selected, force)
    if preflight:
        t0 = time.time()
        pre_flight.preflight(cfg, [st.name for st in to_run], work_dir)
        logger.info("pre-flight check of %d stages passed in %.1fs", len(to_run), time.time() - t0)
    torch.manual_seed(cfg.seed)
    if dist.is_main():
        write_bytes_atomic(work_dir / "config.yaml", to_yaml(cfg).encode())
    results: dict[str, Any] = {}
    for st in selected:
        h = ctx.hashes[st.name]
        missing = [n for n in st.requires(cfg) if STAGES[n].enabled(cfg) and not is_complete(ctx, n, ctx.hashes[n])]
        if missing:
            raise ConfigError(f"stage {st.name} needs {', '.join(missing)} to be complete first "
                              f"(run them, or drop --stages)")
        if st not in to_run:
            logger.info("%-22s done already (%s), skipped", st.name, ctx.dir(st.name))
            results[st.name] = ctx.manifest(st.name)
            continue
        if force and dist.is_main() and (ctx.dir(st.name) / PROGRESS).exists():
            (ctx.dir(st.name) / PROGRESS).unlink()
        prepare_stage_dir(ctx, st.name, h)
        ctx.current = st.name
        ctx.optional = {}
        logger.info("%-22s running", st.name)
        t0 = time.time()
        extra = st.run(ctx) or {}
        dist.barrier()
        manifest = {"stage": st.name, "hash": h, "seconds": round(time.time() - t0, 2),
                    "world_size": dist.world_size(), **extra}
        if ctx.optional:
            manifest["optional"] = dict(ctx.optional)
        if dist.is_main():
            write_json(ctx.dir(st.name) / MANIFEST, manifest)
            (ctx.dir(st.name) / PROGRESS).unlink(missing_ok=True)
        dist.barrier()
        logger.info("%-22s finished in %.1fs", st.name, manifest["seconds"])
        results[st.name] = manifest
    return results
