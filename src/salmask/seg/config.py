"""The ``seg`` config section (types and defaults; comments in configs/base.yaml).

Parts: ``weights`` (what DeepLab's weights depend on: ``train_seg``'s hash), ``predictions`` (what
``infer_seg`` adds to them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from salmask.schema import AUTO, key


@dataclass
class SegConfig:
    arch: Literal["deeplabv2", "deeplabv3plus"] = key("deeplabv2", part="weights")
    backbone: str = key("resnet101", part="weights")
    pretrained: bool | str = key(True, part="weights")
    norm: Literal["bn", "gn"] = key("bn", part="weights")
    channels: int = key(256, part="weights", low=1)
    init: Literal["pretrained", "cam"] = key("pretrained", part="weights")
    head_lr_mult: float = key(10.0, part="weights", low=0)
    freeze_backbone: bool = key(False, part="weights")
    source: str = key("select", part="weights")
    batch_size: int = key(10, part="weights", low=1)
    crop: int = key(321, part="weights", low=1)
    scale: list[float] = key([0.5, 1.5], part="weights")
    lr: float = key(2.5e-4, part="weights", low=0)
    momentum: float = key(0.9, part="weights", low=0)
    weight_decay: float = key(5.0e-4, part="weights", low=0)
    iterations: int = key(20000, part="weights", low=1)
    scales: list[float] = key([0.5, 0.75, 1.0, 1.25, 1.5], part="predictions")
    flip: bool = key(True, part="predictions")
    infer_batch: int | AUTO = key("auto", part=None, low=1)
    crf: bool = key(False, part="predictions")
    fit_images: int = key(100, part="predictions", low=0)
    checkpoint_every: int = key(1000, part=None, low=1)
