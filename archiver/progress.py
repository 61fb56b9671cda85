"""Progress for long passes: a tqdm bar on a terminal, plain log lines otherwise.

Cron mail stays clean: the bar only appears when stderr is a terminal (and logs are not
JSON lines, which a bar would garble). Otherwise a log line every ``LINE_INTERVAL_S``
seconds says how far the pass got; with ``-q`` there is neither. ``min_total`` keeps
small passes quiet: ``sync`` shows progress only once it has more than
``SYNC_PROGRESS_MIN_TASKS`` tasks to poll.

Progress may be reported from the database thread as well as the event loop, so the
classes here lock around their state.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Protocol

from archiver import logs

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger("archiver.progress")

#: Seconds between plain progress lines when stderr is not a terminal.
LINE_INTERVAL_S = 10.0
#: ``sync`` shows progress only when it has more tasks than this to poll.
SYNC_PROGRESS_MIN_TASKS = 50


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
    """A tqdm bar with counts and rate on stderr, shown once the total exceeds
    ``min_total``."""

    def __init__(self, label: str, *, min_total: int = 0) -> None:
        self.label = label
        self.min_total = min_total
        self.total = 0
        self.done = 0
        self._bar: tqdm | None = None  # type: ignore[type-arg]
        self._lock = threading.Lock()

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total += n
            if self._bar is None and self.total > self.min_total:
                from tqdm import tqdm  # only once a bar is shown (start-up time)

                self._bar = tqdm(
                    total=self.total,
                    initial=self.done,
                    desc=self.label,
                    unit="task",
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
            elif self._bar is not None:
                self._bar.total = self.total
                self._bar.refresh()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()


class LineProgress:
    """A log line every ``interval_s`` seconds with done/known counts and rate, once the
    total exceeds ``min_total``."""

    def __init__(
        self, label: str, interval_s: float = LINE_INTERVAL_S, *, min_total: int = 0
    ) -> None:
        self.label = label
        self.interval_s = interval_s
        self.min_total = min_total
        self.total = 0
        self.done = 0
        self._started = time.monotonic()
        self._last = self._started
        self._lock = threading.Lock()

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total += n

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last < self.interval_s or self.total <= self.min_total:
                return
            self._last = now
            done, total = self.done, self.total
            rate = done / max(now - self._started, 1e-9)
        log.info(
            "%s: %d/%d tasks (%.1f tasks/s)",
            self.label,
            done,
            total,
            rate,
            extra={"progress": {"done": done, "total": total, "rate": round(rate, 2)}},
        )

    def close(self) -> None:
        pass


def make_progress(label: str, *, enabled: bool = True, min_total: int = 0) -> Progress:
    """A bar when stderr is a terminal (and logs are text), plain lines otherwise, nothing
    when disabled; either shows up only once more than ``min_total`` tasks are known."""
    if not enabled:
        return NullProgress()
    if sys.stderr.isatty() and logs.active_format() != "json":
        return BarProgress(label, min_total=min_total)
    return LineProgress(label, min_total=min_total)
