"""The ``dataset`` config section (types and defaults; comments in configs/base.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from salmask.schema import key


@dataclass
class SyntheticConfig:
    seed: int = key(0)
    image_size: int = key(96, low=16)
    n_train: int = key(240, low=1)
    n_val: int = key(60, low=1)
    n_sod: int = key(200, low=1)


@dataclass
class DatasetConfig:
    kind: Literal["voc", "coco", "folder", "synthetic"] = key("voc")
    root: str | None = key(None)
    train_split: str = key("train_aug")
    pseudo_split: str = key("train_aug")
    eval_split: str = key("train")
    val_split: str = key("val")
    test_split: str | None = key(None)
    max_images: int | None = key(None, low=1)
    classes: list[str] | None = key(None)
    labels: str | None = key(None)
    images: str | None = key(None)
    masks: str | None = key(None)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
