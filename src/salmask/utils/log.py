"""Logging to the console and to ``{work_dir}/salmask.log``; progress that suits where it is read.

On a terminal progress is a live tqdm bar. Anywhere else (a file, a pipe, CI) a bar would become
thousands of carriage-return frames, so progress is a plain log line every ``LOG_EVERY_PCT`` percent or
every ``LOG_EVERY_S`` seconds, with the rate and the time left. Off rank 0 both are silent.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

from tqdm import tqdm

from salmask.utils import dist

T = TypeVar("T")
logger = logging.getLogger("salmask")

LOG_EVERY_PCT = 10.0
"""Off a terminal: a progress line each time this many more percent are done ..."""
LOG_EVERY_S = 60.0
"""... or this many seconds have passed since the last line, whichever comes first ..."""
LOG_MIN_S = 5.0
"""... but never two lines closer than this (a stage that takes seconds logs only its summary)."""


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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class LogProgress:
    """tqdm's ``update`` / ``set_postfix`` / ``close`` / iteration, reported as plain log lines.

    A line reads ``make_cam: 96/200 img (48%), 14.2 img/s, 0:07 left``, plus the postfix (e.g. the loss).
    ``emit`` receives each line (default: ``logger.info``); ``clock`` is the time source (tests fake it).
    """

    def __init__(self, iterable: Iterable | None = None, desc: str = "", total: int | None = None,
                 initial: int = 0, unit: str = "img", *, emit: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n = self._start_n = self._last_n = initial
        self._emit = emit or logger.info
        self._clock = clock
        self._start = self._last = clock()
        self._postfix = ""

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LogProgress made without an iterable")
        for item in self.iterable:
            yield item
            self.update(1)

    def __len__(self) -> int:
        return self.total or 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        since = now - self._last
        if since < LOG_MIN_S:
            return
        pct_step = (self.n - self._last_n) / self.total * 100 if self.total else 0.0
        if pct_step >= LOG_EVERY_PCT or since >= LOG_EVERY_S:
            self._emit(self.line(now))
            self._last, self._last_n = now, self.n

    def line(self, now: float | None = None) -> str:
        """The progress line for the state at ``now`` (default: the clock's current time)."""
        elapsed = (self._clock() if now is None else now) - self._start
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.3g} {self.unit}/s" if rate >= 1 or rate == 0 else f", {1 / rate:.3g} s/{self.unit}"
        if self.total and rate > 0:
            text += f", {_duration((self.total - self.n) / rate)} left"
        return text + (f", {self._postfix}" if self._postfix else "")

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        pass


def _on_terminal(stream: TextIO | None) -> bool:
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(desc: str, total: int | None, initial: int = 0, unit: str = "img", *,
                 enabled: bool = True, stream: TextIO | None = None) -> tqdm | LogProgress:
    """A manually updated progress reporter (``bar.update(n)``, ``set_postfix``, ``close``): a tqdm bar
    on a terminal, log lines with rate and time left elsewhere; silent off rank 0 or when not ``enabled``."""
    show = enabled and dist.is_main()
    if show and not _on_terminal(stream):
        return LogProgress(desc=desc, total=total, initial=initial, unit=unit)
    return tqdm(desc=desc, total=total, initial=initial, unit=unit, disable=not show, file=stream,
                dynamic_ncols=True, leave=False, mininterval=1.0)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "img", *,
             enabled: bool = True, stream: TextIO | None = None) -> Iterable[T]:
    """``items`` with progress reported as :func:`progress_bar` does."""
    show = enabled and dist.is_main()
    if show and not _on_terminal(stream):
        return LogProgress(items, desc=desc, total=total, unit=unit)
    return tqdm(items, desc=desc, total=total, unit=unit, disable=not show, file=stream,
                dynamic_ncols=True, leave=False, mininterval=1.0)
