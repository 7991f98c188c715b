"""The ``boundary_labels`` and ``boundary`` config sections (types and defaults; comments in configs/base.yaml)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from salmask.schema import AUTO, key


@dataclass
class BoundaryLabelsConfig:
    use_saliency: bool = key(True)
    fg_thres: float = key(0.30)
    bg_thres: float = key(0.07)
    crf: bool = key(True)
    window: int = key(13, low=1)
    theta_scale: float = key(0.30)
    theta_diff: float = key(0.10)
    sal_edge_thres: float = key(0.5)


@dataclass
class BoundaryConfig:
    loss: Literal["sbe", "bes"] = key("sbe")
    init: Literal["pretrained", "cam"] = key("pretrained")
    backbone: str = key("resnet50")
    pretrained: bool | str = key(True)
    batch_size: int = key(16, low=1)
    epochs: int = key(3, low=1)
    crop: int = key(512, low=1)
    scale: list[float] = key([0.5, 1.5])
    lr: float = key(0.1, low=0)
    momentum: float = key(1.0e-4, low=0)
    weight_decay: float = key(1.0e-4, low=0)
    infer_batch: int | AUTO = key("auto", part=None, low=1)
