"""The stage registry and the :class:`Context` a stage runs in; this module imports no stage.

A stage declares everything about itself next to its ``run`` (``@stage(...)`` in its package's ``stage.py``):
the config sections its output depends on, its upstream stages, the dataset splits it reads and whether
it needs their image-level labels or ground-truth masks, its disk use, the backbone whose ``pretrained``
value it resolves, the dense-CRF key it honours, its label in tables and reports, its code version, and its own pre-flight check.
Pre-flight, the study runner, the summary table and the report read those declarations; none keeps a
list of its own. The pipeline's order is the one :mod:`salmask.stages` gives: its list of stage modules, each declaring its
stages in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from omegaconf import DictConfig

from salmask.data.datasets import build_split
from salmask.errors import ConfigError
from salmask.io import read_json
from salmask.utils import dist

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
SPLIT_KEYS = ("train_split", "pseudo_split", "eval_split", "val_split", "test_split")
"""The ``dataset.*`` keys naming a split, in the order pre-flight checks them."""


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline. ``run(ctx)`` returns the manifest's extra fields (counts, metrics)."""

    name: str
    run: Callable[["Context"], dict]
    sections: tuple[str, ...] | Callable[[DictConfig], tuple[str, ...]]
    """Config sections or keys the stage's output depends on (they enter its hash); may depend on the config,
    as ``needs`` does (``make_cam``: the inference scales, or the imported folder and its format)."""
    needs: tuple[str, ...] | Callable[[DictConfig], tuple[str, ...]] = ()
    enabled: Callable[[DictConfig], bool] = lambda cfg: True
    doc: str = ""
    version: int = 1
    """Bumped when the stage's code changes what it writes for the same settings, so finished artefacts of the
    older code are not reused."""
    label: str = ""
    """The stage's name in tables and reports (its evaluated or trained object)."""
    reads: tuple[str, ...] = ()
    """``dataset.*`` split keys whose images the stage reads."""
    labels: tuple[str, ...] = ()
    """Of those, the splits whose image-level labels it needs."""
    masks: tuple[str, ...] = ()
    """Of those, the splits whose ground-truth masks it needs (evaluation only)."""
    bytes_per_pixel: float = 0.0
    """Disk the stage writes per image pixel (measured runs, rounded up), for pre-flight's free-space check."""
    checkpoint_bytes: float = 0.0
    """Disk for a training stage's checkpoints (``last.pt`` with the optimiser state, ``model.pt``)."""
    model: tuple[str, str] | None = None
    """(config section, backbone key) of the network a training stage builds; its ``pretrained`` is checked."""
    crf_key: str | None = None
    """The config key that turns on the dense CRF in this stage (the optional ``pydensecrf2`` package)."""
    check: Callable[[DictConfig], None] | None = None
    """The stage's own pre-flight check of its settings and inputs: raises a ``SalmaskError`` naming the key
    or file (run before the first stage starts, with every other problem of the plan)."""

    def hashed(self, cfg: DictConfig) -> tuple[str, ...]:
        """The config keys in the stage's hash under ``cfg``."""
        return self.sections(cfg) if callable(self.sections) else self.sections

    def requires(self, cfg: DictConfig) -> tuple[str, ...]:
        """Upstream stages (``needs`` may depend on the config, e.g. the segmentation mask source)."""
        return self.needs(cfg) if callable(self.needs) else self.needs


STAGES: dict[str, Stage] = {}
"""Every registered stage by name, in pipeline order once :mod:`salmask.stages` is imported."""


def order_stages(modules: list[str]) -> None:
    """Put :data:`STAGES` in pipeline order: by the position of the stage's module in ``modules``, then by
    where the module defines it; a stage of any other module goes last. Import order does not matter."""
    rank = {m: k for k, m in enumerate(modules)}
    ordered = sorted(STAGES.values(), key=lambda st: (rank.get(st.run.__module__, len(rank)),
                                                      st.run.__code__.co_firstlineno))
    STAGES.clear()
    STAGES.update((st.name, st) for st in ordered)


def stage(name: str, *, sections: Iterable[str] | Callable[[DictConfig], tuple[str, ...]],
          needs: Iterable[str] | Callable[[DictConfig], tuple[str, ...]] = (),
          enabled: Callable[[DictConfig], bool] = lambda cfg: True, version: int = 1, label: str = "",
          reads: Iterable[str] = (), labels: Iterable[str] = (), masks: Iterable[str] = (),
          bytes_per_pixel: float = 0.0, checkpoint_bytes: float = 0.0, model: tuple[str, str] | None = None,
          crf_key: str | None = None, check: Callable[[DictConfig], None] | None = None) -> Callable:
    """Decorator registering ``fn(ctx) -> dict`` as the stage ``name`` with its declaration (see :class:`Stage`)."""

    def wrap(fn: Callable[["Context"], dict]) -> Callable[["Context"], dict]:
        if name in STAGES:
            raise ConfigError(f"stage {name!r} is registered twice")
        unknown = [k for k in (*reads, *labels, *masks) if k not in SPLIT_KEYS]
        if unknown:
            raise ConfigError(f"stage {name!r} declares unknown split keys {unknown}")
        on = enabled if not masks else (lambda cfg: enabled(cfg) and has_ground_truth(cfg))
        STAGES[name] = Stage(name, fn, sections if callable(sections) else tuple(sections), needs if callable(needs) else tuple(needs), on,
                             (fn.__doc__ or "").strip(), version, label or name, tuple(reads), tuple(labels),
                             tuple(masks), bytes_per_pixel, checkpoint_bytes, model, crf_key, check)
        return fn

    return wrap


def has_ground_truth(cfg: DictConfig) -> bool:
    """Whether the dataset has ground-truth masks to score against: VOC, COCO and the synthetic set do; a folder
    dataset only with ``dataset.masks``. A stage that declares ``masks`` is left out of the run without them."""
    return cfg.dataset.kind != "folder" or bool(cfg.dataset.masks)


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
        return build_split(self.cfg, self.cfg.dataset[which], self.work_dir, need_labels)

    def manifest(self, stage_name: str) -> dict:
        return read_json(self.dir(stage_name) / MANIFEST)
