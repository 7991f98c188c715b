"""What a saliency source is, as a stage records it and as a table names it.

A stage that computes saliency records :func:`source_fields` in its manifest (the source, and what tells
two runs of it apart: the ONNX model's file name, the classic method, the RGB-SOD encoder, the folder of
precomputed maps); :func:`saliency_name` turns such a record into a row label. A record that lacks a field
says so in the label; nothing is filled in from a default.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig

DETAIL = {"onnx": "model", "classic": "method", "precomputed": "dir"}
"""The field that, with ``source``, names what produced a source's maps (the RGB-SOD network is named by the
source alone; its encoder is recorded all the same)."""
ONNX_MODELS = ((re.compile(r"^u2netp", re.I), "U²-NetP"), (re.compile(r"^u2net", re.I), "U²-Net"))
"""Display names of well-known ONNX salient-object models, by file name; any other model is named by its file."""
CLASSIC_METHODS = {"mbd": "classic MB+", "rbd": "classic RBD"}


def source_fields(cfg: DictConfig, source: str) -> dict[str, Any]:
    """What a stage records about saliency source ``source`` run with the settings ``cfg`` (the precomputed
    folder, which the stage resolves itself, excepted)."""
    fields: dict[str, Any] = {"source": source}
    if source == "onnx" and cfg.saliency.model:
        fields["model"] = Path(str(cfg.saliency.model)).name
    elif source == "classic":
        fields["method"] = str(cfg.saliency.classic_method)
    elif source == "rgbsod":
        fields["encoder"] = str(cfg.sod.encoder)
    elif source == "precomputed" and cfg.saliency.dir:
        fields["dir"] = str(cfg.saliency.dir)
    return fields


def is_complete(record: Mapping[str, Any] | None) -> bool:
    """Whether ``record`` names its source and the field that tells runs of that source apart."""
    if not record or "source" not in record:
        return False
    detail = DETAIL.get(str(record["source"]))
    return detail is None or bool(record.get(detail))


def onnx_model_name(file_name: str) -> str:
    """``U²-NetP`` for ``u2netp*.onnx`` (likewise U²-Net), else the file's name."""
    for pattern, name in ONNX_MODELS:
        if pattern.match(file_name):
            return name
    return file_name


def saliency_name(record: Mapping[str, Any] | None) -> str:
    """A row label's name for the saliency a record describes: ``U²-NetP saliency``, ``classic MB+ saliency``,
    ``RGB-SOD saliency``, ``precomputed saliency (Sal/)``; what the record lacks is said, not guessed."""
    if not record or not record.get("source"):
        return "saliency of an unrecorded source"
    source = str(record["source"])
    detail = record.get(DETAIL.get(source, ""))
    if source == "onnx":
        return f"{onnx_model_name(str(detail))} saliency" if detail else "ONNX saliency, model not recorded"
    if source == "classic":
        return f"{CLASSIC_METHODS.get(str(detail), f'classic {detail}')} saliency" if detail else \
            "classic saliency, method not recorded"
    if source == "rgbsod":
        return "RGB-SOD saliency"
    if source == "precomputed":
        return f"precomputed saliency ({Path(str(detail)).name}/)" if detail else \
            "precomputed saliency, folder not recorded"
    return f"saliency from source {source!r}"
