"""Typed config sections: each key's type, default and what it changes, declared once.

A section is a dataclass beside the code it configures (``salmask/cam/config.py``: ``CamConfig``...); each
field is made by :func:`key`, which records the part of the stage's output the key changes:

* ``"output"`` (the default): what a stage writes; it enters the hash of every stage that hashes the section.
* a named part (``"weights"``, ``"cams"``...): the stages that read the section key by key hash the keys of
  their part (:func:`keys_of`), e.g. ``train_cam`` the classifier's ``"weights"`` keys, ``make_cam`` its ``"cams"``.
* ``None``: how a stage computes, not what (batch sizes of inference, checkpoint intervals, devices):
  changing it reruns nothing.

``base.yaml`` holds the same defaults with a comment per key (tests/test_config_defaults.py checks the two
agree, key by key and in order); the loader checks every value against the field's type; the generated config
reference lists each key's type and part. This module imports nothing of salmask.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

AUTO = Literal["auto"]


def key(default: Any, *, part: str | None = "output", low: float | None = None) -> Any:
    """A config field: its ``default``, the ``part`` of the output it changes (None: not hashed) and, for numbers,
    the lowest value allowed."""
    meta = {"part": part, "low": low}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of section dataclass ``cls`` by name, in declaration order."""
    return {f.name: f for f in dataclasses.fields(cls)}


def types_of(cls: type) -> dict[str, Any]:
    """The resolved type of each field of ``cls``."""
    return typing.get_type_hints(cls)


def keys_of(cls: type, prefix: str, part: str) -> tuple[str, ...]:
    """The dotted keys of section ``cls`` (found at ``prefix``) whose part is ``part``, in declaration order."""
    return tuple(f"{prefix}.{f.name}" for f in dataclasses.fields(cls) if f.metadata.get("part", "output") == part)


def leaves(cls: type, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field]]:
    """(dotted key, type, field) of every key under ``cls``, subsections walked, in declaration order."""
    out = []
    hints = types_of(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(leaves(hints[f.name], dotted))
        else:
            out.append((dotted, hints[f.name], f))
    return out


def unhashed(cls: type) -> tuple[str, ...]:
    """Every dotted key under ``cls`` that enters no stage's hash (part None)."""
    return tuple(k for k, _, f in leaves(cls) if f.metadata.get("part", "output") is None)


def free_form(cls: type) -> tuple[str, ...]:
    """Every dotted key under ``cls`` holding a mapping of the user's own keys."""
    return tuple(k for k, tp, _ in leaves(cls) if tp is dict or typing.get_origin(tp) is dict)


def defaults(cls: type) -> dict[str, Any]:
    """The section's defaults as plain YAML values (subsections as dicts)."""
    return dataclasses.asdict(cls())


def accepts(tp: Any, value: Any) -> bool:
    """Whether ``value`` (a YAML value) is of type ``tp`` (an int is a float; bool is no number)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(accepts(a, value) for a in typing.get_args(tp))
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(accepts(item, v) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def describe(tp: Any, low: float | None = None, ge: str = ">=") -> str:
    """``tp`` in words, for messages and the config reference: ``int >= 1 or 'auto'``, ``one of sbe, bes``...
    (``low``: the lowest number allowed, written after the numeric type)."""
    origin = typing.get_origin(tp)
    if low is not None and tp in (int, float):
        return f"{tp.__name__} {ge} {low:g}"
    if origin in (Union, types.UnionType):
        parts = [a for a in typing.get_args(tp) if a is not type(None)]
        text = " or ".join(describe(a, low, ge) for a in parts)
        return f"{text} or null" if len(parts) < len(typing.get_args(tp)) else text
    if origin is Literal:
        args = typing.get_args(tp)
        return f"'{args[0]}'" if len(args) == 1 else "one of " + ", ".join(str(a) for a in args)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return f"list of {describe(item)}"
    if origin is dict or tp is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))
