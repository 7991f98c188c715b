"""Configuration: YAML presets over ``configs/base.yaml`` plus ``key=value`` overrides (OmegaConf).

A preset (or a user's YAML file) may build on another with ``base: NAME`` (a preset, or a file relative to
it) and then holds only what it changes.

Every key must exist in ``base.yaml`` (struct mode), so a typo is a ``ConfigError`` rather than a silently
ignored setting. Values are typed by YAML (``true``/``false`` are booleans, never strings).
"""
from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from salmask.errors import ConfigError

PRESETS = ("demo", "voc", "voc_cpu", "voc_small", "voc_v3plus", "coco")
FREE_FORM = ("sod.encoder_kwargs",)
STRING_OR_BOOL = ("cam.pretrained", "sod.pretrained", "boundary.pretrained", "seg.pretrained")  # or a checkpoint path  # passed through to timm as they are
AUTO_OR_INT = ("cam.infer_batch", "boundary.infer_batch", "seg.infer_batch")  # "auto" or a number of images
AUTO_OR_COUNT = ("num_workers",)  # "auto" or a number >= 0
AUTO_OR_FLOAT = ("walk.bg_score",)  # "auto" or a number


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
            _check_types(OmegaConf.to_container(base), OmegaConf.to_container(cfg), "")
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
    _check_types(OmegaConf.to_container(base), OmegaConf.to_container(cfg), "")
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


def _check_types(ref: Any, value: Any, key: str) -> None:
    """Each value keeps the type of its default (ints may become floats; ``null`` defaults take anything)."""
    if isinstance(ref, dict) and isinstance(value, dict):
        for k, v in value.items():
            if k in ref:
                _check_types(ref[k], v, f"{key}.{k}" if key else k)
        return
    if ref is None or value is None:
        return
    if key in AUTO_OR_INT:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return
        raise ConfigError(f"config key {key!r}: expected 'auto' or an integer >= 1, got {value!r}")
    if key in AUTO_OR_COUNT:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return
        raise ConfigError(f"config key {key!r}: expected 'auto' or an integer >= 0, got {value!r}")
    if key in AUTO_OR_FLOAT:
        if value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return
        raise ConfigError(f"config key {key!r}: expected 'auto' or a number, got {value!r}")
    if isinstance(ref, bool):
        if isinstance(value, bool) or (key in STRING_OR_BOOL and isinstance(value, str)):
            return
    elif isinstance(ref, float) and isinstance(value, int) and not isinstance(value, bool):
        return
    elif isinstance(ref, list) and isinstance(value, list):
        return
    elif type(value) is type(ref):
        return
    raise ConfigError(f"config key {key!r}: expected {type(ref).__name__}, got {value!r}")


def _short(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


NOT_HASHED = ("infer_batch",)
"""Keys that choose how a stage computes, not what: changing them reruns nothing."""


def _hashed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _hashed(v) for k, v in value.items() if k not in NOT_HASHED}
    return value


def section_hash(*parts: Any) -> str:
    """A stable short hash of config sections (DictConfig or plain values) and upstream hashes."""
    plain = [_hashed(OmegaConf.to_container(p, resolve=True)) if isinstance(p, DictConfig) else p for p in parts]
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
