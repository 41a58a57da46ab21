"""Progress that reads well wherever it goes: a tqdm bar on a terminal, a plain log line every few seconds elsewhere.

Off a terminal (nohup, a redirect, SLURM, a pipe) a bar's ``\\r`` updates become one endless line; there,
:func:`progress` gives :class:`LogProgress`, which logs ``desc: 1,200/40,000 composites (3%), 410/s, 1m35s left``
every :data:`EVERY_S` seconds, between a first line (what there is to do) and a last one (how long it took).
Generation, the depth stage, the cache build and ``fgbg.tools.stats`` count with it; training has its own lines
(:class:`~fgbg.training.callbacks.TrainingProgress`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

log = logging.getLogger(__name__)
EVERY_S = 10.0  # seconds between log lines off a terminal


def is_terminal() -> bool:
    """Whether stderr, where tqdm and Lightning draw their bars, is a terminal."""
    return sys.stderr.isatty()


def format_duration(seconds: float) -> str:
    """``12s``, ``3m05s``, ``2h07m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Every:
    """Calling it says whether ``seconds`` have passed since it last said so (or since it was made)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


class LogProgress:
    """The part of tqdm's interface the project uses (``update``, ``n``, ``total``, ``set_description``,
    ``close``, iteration, ``with``), as a log line every ``every_s`` seconds; ``disable``: count silently."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        disable: bool = False,
        every_s: float = EVERY_S,
    ):
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.n = 0
        self.started = time.monotonic()
        self.due = Every(every_s)
        self.closed = disable
        if not disable:
            log.info("%s: %s %ss", desc, f"{self.total:,}" if self.total is not None else "counting", unit)

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.disable and self.due():
            self._log()

    def close(self) -> None:
        """The last line (once)."""
        if not self.closed:
            self._log(done=True)
            self.closed = True

    def _log(self, done: bool = False) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.n / elapsed if elapsed > 0 else math.inf
        count = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}s"
        if self.total:
            count += f" ({100 * self.n / self.total:.0f}%)"
        if done:
            tail = f"in {format_duration(elapsed)}"
        else:
            tail = f"{rate:,.1f}/s"
            if self.total and 0 < rate < math.inf:
                tail += f", {format_duration((self.total - self.n) / rate)} left"
        log.info("%s: %s, %s", self.desc, count, tail)


Progress = tqdm | LogProgress


def progress(
    iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True
) -> Progress:
    """A counter of ``total`` ``unit``\\ s (wrapping ``iterable`` when given): a tqdm bar on a terminal, else
    :class:`LogProgress`; ``enabled`` False shows nothing."""
    if is_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, smoothing=0.1)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, disable=not enabled)
