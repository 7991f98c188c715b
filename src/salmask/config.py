"""Configuration: YAML presets over ``configs/base.yaml`` plus ``key=value`` overrides (OmegaConf).

A preset (or a user's YAML file) may build on another with ``base: NAME`` (a preset, or a file relative to
it) and then holds only what it changes.

Every key must exist in ``base.yaml`` (struct mode), so a typo is a ``ConfigError`` rather than a silently
ignored setting. Values are typed by YAML (``true``/``false`` are booleans, never strings) and checked against
:class:`Config`, the typed sections declared beside the code they configure (:mod:`salmask.schema`), which
also say which keys enter the stages' hashes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from salmask.boundary.config import BoundaryConfig, BoundaryLabelsConfig
from salmask.cam.config import CamConfig
from salmask.data.config import DatasetConfig
from salmask.errors import ConfigError
from salmask.refine.config import WalkConfig
from salmask.saliency.config import SaliencyConfig, SodConfig
from salmask.schema import AUTO, accepts, describe, free_form, key, section, types_of, unhashed
from salmask.seg.config import SegConfig
from salmask.select.config import SelectConfig

PRESETS = ("demo", "voc", "voc_cpu", "voc_small", "voc_v3plus", "coco")


@dataclass
class Config:
    """Every key salmask knows: the run's own, then one typed section per part of the pipeline."""

    work_dir: str = key("work/run", part=None)
    seed: int = key(0)
    device: str = key("auto", part=None)
    amp: bool = key(True, part=None)
    num_workers: int | AUTO = key("auto", part=None, low=0)
    tensorboard: bool = key(False, part=None)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    saliency: SaliencyConfig = field(default_factory=SaliencyConfig)
    sod: SodConfig = field(default_factory=SodConfig)
    boundary_labels: BoundaryLabelsConfig = field(default_factory=BoundaryLabelsConfig)
    boundary: BoundaryConfig = field(default_factory=BoundaryConfig)
    walk: WalkConfig = field(default_factory=WalkConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    seg: SegConfig = field(default_factory=SegConfig)


FREE_FORM = free_form(Config)
"""Mappings whose keys are the user's (``sod.encoder_kwargs``): struct mode is off inside them."""
NOT_HASHED = frozenset(unhashed(Config))
"""Keys that choose how a stage computes, not what: changing them reruns nothing."""


def _preset_text(name: str) -> str:
    return resources.files("salmask.configs").joinpath(f"{name}.yaml").read_text()


INHERIT = "base"
"""A preset's top-level key naming the preset (or YAML file, relative to it) it builds on."""


def _layers(preset_or_path: str, seen: tuple[str, ...] = ()) -> list[tuple[DictConfig, str]]:
    """The config layers of a preset or YAML file, each it inherits from (``base: NAME``) first."""
    if preset_or_path in PRESETS:
        text, origin, folder = _preset_text(preset_or_path), f"preset {preset_or_path!r}", None
    else:
        path = Path(preset_or_path)
        if not path.is_file():
            raise ConfigError(f"{preset_or_path}: neither a preset ({', '.join(PRESETS)}) nor a YAML file")
        try:
            text, origin, folder = path.read_text(encoding="utf-8"), str(path), path.parent
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the config file ({e})") from None
    if origin in seen:
        raise ConfigError(f"{origin}: inherits from itself ({' -> '.join((*seen, origin))})")
    try:
        layer = OmegaConf.create(text) or OmegaConf.create({})
    except (OmegaConfBaseException, yaml.YAMLError) as e:
        raise ConfigError(f"{origin}: {_short(e)}") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"{origin}: a config file holds a mapping of keys, not a {type(layer).__name__}")
    parent = layer.pop(INHERIT, None)
    if parent is None:
        return [(layer, origin)]
    parent = str(parent)
    if parent not in PRESETS and folder is not None and not Path(parent).is_absolute():
        parent = str(folder / parent)
    return [*_layers(parent, (*seen, origin)), (layer, origin)]


def load_config(preset_or_path: str = "demo", overrides: Sequence[str] = ()) -> DictConfig:
    """Base config, merged with a preset name or YAML file (and the presets it inherits from with
    ``base: NAME``), then ``key=value`` overrides."""
    base = OmegaConf.create(_preset_text("base"))
    OmegaConf.set_struct(base, True)
    for free in FREE_FORM:
        OmegaConf.set_struct(OmegaConf.select(base, free), False)
    cfg = base
    for layer, origin in _layers(preset_or_path):
        try:
            cfg = OmegaConf.merge(cfg, layer)
            _check_types(OmegaConf.to_container(cfg))
            _check_resolves(cfg)
        except ConfigError as e:
            raise ConfigError(str(e) if str(e).startswith(origin) else f"{origin}: {e}") from None
        except (OmegaConfBaseException, yaml.YAMLError, TypeError, ValueError, AssertionError) as e:  # a scalar: assert
            raise ConfigError(f"{origin}: {_short(e)}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise ConfigError(f"unknown config key {key!r}")
        try:
            cfg.merge_with(OmegaConf.from_dotlist([f"{key}={value}"]))
        except (OmegaConfBaseException, yaml.YAMLError, TypeError, ValueError, AssertionError) as e:
            raise ConfigError(f"override {item!r}: {_short(e)}") from None
    _check_types(OmegaConf.to_container(cfg))
    _check_resolves(cfg)
    return cfg


def _check_resolves(cfg: DictConfig) -> None:
    """Every ``${...}`` interpolation resolves now, not when a stage first reads the key."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(f"config key {key!r} does not resolve: {_short(e)}" if key else
                          f"a value does not resolve: {_short(e)}") from None


def _check_types(value: dict, cls: type = Config, prefix: str = "") -> None:
    """Each value is of its key's declared type (an int may stand for a float; ``null`` only where allowed)
    and not below the key's lowest value."""
    hints = types_of(cls)
    fields = section(cls)
    for k, v in value.items():
        if k not in fields:
            continue  # struct mode reports unknown keys
        dotted = f"{prefix}{k}"
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            if isinstance(v, dict):
                _check_types(v, tp, f"{dotted}.")
                continue
            raise ConfigError(f"config key {dotted!r}: expected a section of keys, got {v!r}")
        low = fields[k].metadata.get("low")
        if not accepts(tp, v) or (low is not None and accepts(float, v) and v < low):
            raise ConfigError(f"config key {dotted!r}: expected {describe(tp, low)}, got {v!r}")


def _short(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def hash_part(cfg: DictConfig, dotted: str) -> Any:
    """The value of key or section ``dotted`` as it enters a stage's hash: a section as a plain dict without its
    :data:`NOT_HASHED` keys, any other value as the config holds it."""
    value = OmegaConf.select(cfg, dotted)
    if not isinstance(value, DictConfig):
        return value
    return _without(OmegaConf.to_container(value, resolve=True), dotted)


def _without(value: dict, prefix: str) -> dict:
    return {k: _without(v, f"{prefix}.{k}") if isinstance(v, dict) else v for k, v in value.items()
            if f"{prefix}.{k}" not in NOT_HASHED}


def section_hash(*parts: Any) -> str:
    """A stable short hash of config values (plain, or DictConfig as they are) and upstream hashes."""
    plain = [OmegaConf.to_container(p, resolve=True) if isinstance(p, DictConfig) else p for p in parts]
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
