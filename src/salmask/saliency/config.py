"""The ``saliency`` and ``sod`` config sections (types and defaults; comments in configs/base.yaml)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from salmask.schema import key


@dataclass
class SaliencyConfig:
    source: Literal["precomputed", "classic", "rgbsod", "onnx"] = key("rgbsod")
    dir: str | None = key(None)
    allow_missing: bool = key(False)
    classic_method: str = key("mbd")
    model: str | None = key(None)
    input_size: int = key(320, low=1)
    mean: list[float] = key([0.485, 0.456, 0.406])
    std: list[float] = key([0.229, 0.224, 0.225])
    divide_by_max: bool = key(True)
    output_index: int = key(0, low=0)
    batch_size: int = key(8, low=1)
    zero_below: float = key(0.0, low=0)


@dataclass
class SodConfig:
    encoder: str = key("swin_base_patch4_window7_224")
    encoder_kwargs: dict[str, Any] = key({})
    pretrained: bool | str = key(True)
    img_size: int = key(224, low=1)
    decoder_channels: int = key(64, low=1)
    data_root: str | None = key(None)
    test_root: str | None = key(None)
    epochs: int = key(150, low=1)
    batch_size: int = key(16, low=1)
    lr: float = key(1.0e-4, low=0)
    lr_step: int = key(15, low=1)
    lr_gamma: float = key(0.5, low=0)
