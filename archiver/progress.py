"""Progress for long passes: a tqdm bar on a terminal, plain log lines otherwise.

Cron mail stays clean: the bar only appears when stderr is a terminal.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol

from tqdm import tqdm

log = logging.getLogger("archiver.progress")

#: Seconds between plain progress lines when stderr is not a terminal.
LINE_INTERVAL_S = 10.0


class Progress(Protocol):
    def add_total(self, n: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


class NullProgress:
    """Shows nothing."""

    def add_total(self, n: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    """A tqdm bar with counts and rate, on stderr."""

    def __init__(self, label: str) -> None:
        self._bar = tqdm(total=0, desc=label, unit="task", file=sys.stderr, dynamic_ncols=True)

    def add_total(self, n: int) -> None:
        self._bar.total = (self._bar.total or 0) + n
        self._bar.refresh()

    def advance(self, n: int = 1) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


class LineProgress:
    """A log line every LINE_INTERVAL_S seconds with done/known counts and rate."""

    def __init__(self, label: str, interval_s: float = LINE_INTERVAL_S) -> None:
        self.label = label
        self.interval_s = interval_s
        self.total = 0
        self.done = 0
        self._started = time.monotonic()
        self._last = self._started

    def add_total(self, n: int) -> None:
        self.total += n

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            rate = self.done / max(now - self._started, 1e-9)
            log.info("%s: %d/%d tasks (%.1f tasks/s)", self.label, self.done, self.total, rate)

    def close(self) -> None:
        pass


def make_progress(label: str, *, enabled: bool = True) -> Progress:
    """A bar when stderr is a terminal, plain lines otherwise, nothing when disabled."""
    if not enabled:
        return NullProgress()
    if sys.stderr.isatty():
        return BarProgress(label)
    return LineProgress(label)
