"""The ``walk`` config section (types and defaults; comments in configs/base.yaml)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from salmask.schema import AUTO, key


@dataclass
class WalkConfig:
    beta: float = key(5.0, low=0)
    exp_times: int = key(8, low=0)
    radius: int = key(5, low=1)
    bg_score: float | AUTO = key("auto")
    boundary: Literal["learned", "saliency", "both"] = key("learned")
    crf: bool = key(False)
    crf_unary: Literal["labels", "scores"] = key("labels")
