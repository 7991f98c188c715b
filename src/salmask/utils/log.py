"""Logging to the console and to ``{work_dir}/salmask.log``; progress bars that stay quiet off rank 0."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Iterable, TypeVar

from tqdm import tqdm

from salmask.utils import dist

T = TypeVar("T")
logger = logging.getLogger("salmask")


def setup_logging(work_dir: Path | None = None, level: int = logging.INFO) -> None:
    """Console handler (rank 0 only) plus a file handler in ``work_dir`` (one file per rank > 0)."""
    logger.setLevel(level)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if dist.is_main():
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        logger.addHandler(console)
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        name = "salmask.log" if dist.is_main() else f"salmask.rank{dist.rank()}.log"
        fh = logging.FileHandler(work_dir / name)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.propagate = False


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "img") -> Iterable[T]:
    """A tqdm bar with ETA and rate on rank 0 (to stderr); silent elsewhere."""
    return tqdm(items, desc=desc, total=total, unit=unit, disable=not dist.is_main(),
                dynamic_ncols=True, leave=False, mininterval=1.0)


def progress_bar(desc: str, total: int, initial: int = 0, unit: str = "img") -> tqdm:
    """A manually updated tqdm bar (``bar.update(n)``) with ETA and rate; disabled off rank 0."""
    return tqdm(desc=desc, total=total, initial=initial, unit=unit, disable=not dist.is_main(),
                dynamic_ncols=True, leave=False, mininterval=1.0)
