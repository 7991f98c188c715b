"""The orchestrator: an ordered registry of stages, each writing under ``{work_dir}/{stage}/``.

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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from omegaconf import DictConfig, OmegaConf

from salmask.config import section_hash, to_yaml
from salmask.errors import ConfigError
from salmask.io import read_json, write_bytes_atomic, write_json
from salmask.utils import dist
from salmask.utils.log import logger

MANIFEST = "manifest.json"
PROGRESS = "progress.json"


@dataclass
class Stage:
    """One step of the pipeline. ``run(ctx)`` returns the manifest's extra fields (counts, metrics)."""

    name: str
    run: Callable[["Context"], dict]
    sections: tuple[str, ...]
    needs: tuple[str, ...] | Callable[[DictConfig], tuple[str, ...]] = ()
    enabled: Callable[[DictConfig], bool] = lambda cfg: True
    doc: str = ""
    version: int = 1
    """Bumped when the stage's code changes what it writes for the same settings, so finished artefacts of the
    older code are not reused."""

    def requires(self, cfg: DictConfig) -> tuple[str, ...]:
        """Upstream stages (``needs`` may depend on the config, e.g. the segmentation mask source)."""
        return self.needs(cfg) if callable(self.needs) else self.needs


STAGES: dict[str, Stage] = {}
ORDER = ("generate", "coco_masks", "train_cam", "make_cam", "eval_cam", "train_sod", "saliency", "eval_sod",
         "make_boundary_labels", "train_boundary", "make_boundary", "make_pseudo", "eval_pseudo", "select",
         "eval_select", "train_seg", "infer_seg", "eval_seg")
"""Pipeline order, whatever order the stage modules are imported in (a stage not listed goes last)."""


def stage(name: str, *, sections: Iterable[str],
          needs: Iterable[str] | Callable[[DictConfig], tuple[str, ...]] = (), enabled: Callable[[DictConfig], bool] = lambda cfg: True,
          version: int = 1) -> Callable:
    """Decorator registering ``fn(ctx) -> dict`` as a stage (code ``version``, see :class:`Stage`), kept in
    :data:`ORDER`."""

    def wrap(fn: Callable[["Context"], dict]) -> Callable[["Context"], dict]:
        deps = needs if callable(needs) else tuple(needs)
        STAGES[name] = Stage(name, fn, tuple(sections), deps, enabled, (fn.__doc__ or "").strip(), version)
        ordered = sorted(STAGES.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER))
        STAGES.clear()
        STAGES.update(ordered)
        return fn

    return wrap


@dataclass
class Context:
    """What a stage sees: the resolved config, the work directory, the device and the split readers."""

    cfg: DictConfig
    work_dir: Path
    current: str = ""
    hashes: dict[str, str] = field(default_factory=dict)
    optional: dict[str, Any] = field(default_factory=dict)
    """Optional code paths the current stage used (``crf``, ``onnx_provider``, ``tensorboard``): its manifest's
    ``optional`` field, so a result says what produced it."""

    def used(self, what: str, how: Any) -> None:
        """Record that the current stage took optional path ``what`` (e.g. ``crf``, ``"pydensecrf2 1.1"``)."""
        self.optional[what] = how

    @cached_property
    def device(self) -> torch.device:
        want = self.cfg.device
        if want == "auto":
            return torch.device(f"cuda:{dist.local_rank()}" if torch.cuda.is_available() else "cpu")
        if want == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device=cuda but CUDA is not available")
        return torch.device(want)

    @property
    def amp(self) -> bool:
        return bool(self.cfg.amp) and self.device.type == "cuda"

    def dir(self, stage_name: str | None = None) -> Path:
        return self.work_dir / (stage_name or self.current)

    def split(self, which: str, need_labels: bool = True):
        """``which`` is a key of ``cfg.dataset`` (``train_split``, ``val_split``...)."""
        from salmask.data.datasets import build_split

        return build_split(self.cfg, self.cfg.dataset[which], self.work_dir, need_labels)

    def manifest(self, stage_name: str) -> dict:
        return read_json(self.dir(stage_name) / MANIFEST)


def stage_hash(ctx: Context, st: Stage) -> str:
    parts = [OmegaConf.select(ctx.cfg, s) for s in st.sections]
    # Version 1 adds nothing, so the artefacts of runs from before versions existed stay valid.
    version = [f"version {st.version}"] if st.version > 1 else []
    return section_hash(st.name, ctx.cfg.dataset, ctx.cfg.seed, *parts, *version,
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


PATH_KEYS = ("work_dir", "dataset.root", "dataset.labels", "dataset.images", "dataset.masks", "saliency.dir",
             "saliency.model", "sod.data_root", "sod.test_root")


def absolute_paths(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` whose path settings are absolute, so the saved config works from anywhere."""
    from omegaconf import OmegaConf

    cfg = cfg.copy()
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value:
            OmegaConf.update(cfg, key, str(Path(str(value)).expanduser().resolve()))
    return cfg


def resolve_stages(cfg: DictConfig, only: Iterable[str] | None) -> list[Stage]:
    import salmask.stages  # noqa: F401  (registers the stages)

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
    from salmask.utils.lock import work_dir_lock
    from salmask.utils.log import setup_logging

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
    from salmask.preflight import check_plan

    work_dir = Path(cfg.work_dir).expanduser().resolve()
    cfg = absolute_paths(cfg)
    ctx = Context(cfg, work_dir)
    to_run = planned_stages(ctx, resolve_stages(cfg, stages), force)
    return check_plan(cfg, [st.name for st in to_run], work_dir, before)


def _run_locked(ctx: Context, selected: list[Stage], force: bool, preflight: bool) -> dict[str, Any]:
    from salmask.preflight import preflight as check

    cfg, work_dir = ctx.cfg, ctx.work_dir
    to_run = planned_stages(ctx, selected, force)
    if preflight:
        t0 = time.time()
        check(cfg, [st.name for st in to_run], work_dir)
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
