"""What produced a run's saliency rows, for its summary and its report, read from the stages' manifests.

The ``saliency`` and ``eval_sod`` stages record their sources (:func:`salmask.saliency.names.source_fields`).
A manifest written before they recorded the detail (the ONNX model's file, the classic method) is completed
from the work directory's ``config.yaml`` only when those are provably the settings it ran with: the stage's
hash recomputed from them equals the manifest's. Otherwise the label says that the detail was not recorded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

import salmask.stages  # noqa: F401  (registers the stages whose hashes are recomputed)
from salmask.config import load_config
from salmask.errors import SalmaskError
from salmask.io import read_json
from salmask.pipeline import MANIFEST, Context, absolute_paths, planned_stages
from salmask.saliency.names import is_complete, saliency_name, source_fields


def _manifest(path: Path) -> dict | None:
    try:
        manifest = read_json(path)
    except (SalmaskError, OSError):
        return None
    return manifest if isinstance(manifest, dict) else None


def verified_settings(work_dir: Path, stage: str, manifest: dict) -> DictConfig | None:
    """``work_dir``'s ``config.yaml`` when ``stage``'s hash recomputed from it equals ``manifest``'s (the
    settings that stage ran with); None otherwise or when the file is absent or unreadable."""
    path = work_dir / "config.yaml"
    if not manifest.get("hash") or not path.is_file():
        return None
    try:
        cfg = absolute_paths(load_config(str(path)))
        ctx = Context(cfg, work_dir)
        planned_stages(ctx, [], force=False)  # fills ctx.hashes for every enabled stage, runs nothing
    except (SalmaskError, OSError):
        return None
    return cfg if ctx.hashes.get(stage) == manifest["hash"] else None


def _completed(work_dir: Path, stage: str, manifest: dict, record: dict[str, Any]) -> dict[str, Any]:
    if is_complete(record):
        return record
    cfg = verified_settings(work_dir, stage, manifest)
    return record if cfg is None else {**source_fields(cfg, str(record["source"])), **record}


def saliency_record(work_dir: Path) -> dict[str, Any] | None:
    """What produced ``work_dir``'s saliency maps (``source`` and its detail, e.g. ``model: u2netp.onnx``);
    None when its saliency stage has not finished."""
    work_dir = Path(work_dir).expanduser().resolve()
    manifest = _manifest(work_dir / "saliency" / MANIFEST)
    if manifest is None:
        return None
    record = {k: v for k, v in manifest.items() if k in ("source", "model", "method", "encoder", "dir")}
    return _completed(work_dir, "saliency", manifest, record) if "source" in record else record


def sod_records(work_dir: Path) -> dict[str, dict[str, Any]]:
    """For each saliency source ``eval_sod`` scored in ``work_dir``, what it was (empty when not run)."""
    work_dir = Path(work_dir).expanduser().resolve()
    manifest = _manifest(work_dir / "eval_sod" / MANIFEST)
    metrics = manifest.get("metrics") if manifest else None
    if not isinstance(metrics, dict):
        return {}
    recorded = manifest.get("sources") if isinstance(manifest.get("sources"), dict) else {}
    return {src: _completed(work_dir, "eval_sod", manifest, dict(recorded.get(src) or {"source": src}))
            for src in metrics}


def saliency_entries(work_dir: Path) -> dict[str, Any]:
    """The summary's entries naming its saliency: ``saliency`` (the record and its ``name``, see
    :func:`salmask.saliency.names.saliency_name`) and ``sod_sources`` ({source: record and name}), each
    present when its stage has finished."""
    out: dict[str, Any] = {}
    record = saliency_record(work_dir)
    if record is not None:
        out["saliency"] = {**record, "name": saliency_name(record)}
    sod = sod_records(work_dir)
    if sod:
        out["sod_sources"] = {src: {**r, "name": saliency_name(r)} for src, r in sod.items()}
    return out
