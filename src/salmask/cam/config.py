"""The ``cam`` config section (types and defaults; comments in configs/base.yaml).

Parts: ``weights`` (what the classifier's weights depend on: ``train_cam``'s hash), ``import`` (another
method's CAMs: ``make_cam``'s hash with ``source: precomputed``), ``cams`` (``make_cam``'s inference),
``eval`` (``eval_cam``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from salmask.schema import AUTO, key


@dataclass
class CamConfig:
    source: Literal["train", "precomputed"] = key("train", part="import")
    dir: str | None = key(None, part="import")
    format: Literal["salmask", "irn", "clip-es", "png"] = key("irn", part="import")
    backbone: str = key("resnet50", part="weights")
    pretrained: bool | str = key(True, part="weights")
    batch_size: int = key(16, part="weights", low=1)
    epochs: int = key(5, part="weights", low=1)
    crop: int = key(512, part="weights", low=1)
    resize_long: list[int] = key([320, 512], part="weights")
    lr: float = key(0.1, part="weights", low=0)
    momentum: float = key(1.0e-4, part="weights", low=0)
    weight_decay: float = key(1.0e-4, part="weights", low=0)
    attention_k: float = key(1.0e-3, part="weights", low=0)
    scales: list[float] = key([1.0, 0.5, 1.5, 2.0], part="cams")
    infer_batch: int | AUTO = key("auto", part=None, low=1)
    eval_thresholds: list[float] = key([0.05, 0.07, 0.09, 0.11, 0.13, 0.15, 0.17, 0.19, 0.21, 0.23, 0.25, 0.30,
                                        0.35, 0.40, 0.45, 0.50], part="eval")
    bg_threshold: float = key(0.21, part="eval")
