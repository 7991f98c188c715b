"""The ``select`` config section (types and defaults; comments in configs/base.yaml). The Selector's own
options (:class:`salmask.select.sos.SelectorConfig`) take their defaults from here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from salmask.schema import key


@dataclass
class SelectConfig:
    enabled: bool = key(True)
    mode: Literal["sep", "alpha", "auto"] = key("sep")
    judge: Literal["boundary", "classifier"] = key("boundary")
    t0: float = key(0.4, low=0)
    t1: float = key(0.2, low=0)
    tau: float = key(1.4, low=0)
    eta: float = key(0.75, low=0)
    sal_thres: float = key(0.5, low=0)
    salient_classes: list[str | int] | None = key(None)
    sweep: bool = key(True)
