"""What every part of one pass shares: the archive and its database thread, the run's
lock, options, counters and errors, and whether the pass should stop.

Built without an event loop (the deadline is on the monotonic clock, which asyncio's
loop time is), so the parts that take it can be built and tested outside one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from archiver.config import SyncOptions
from archiver.progress import NullProgress, Progress
from archiver.stats import RunResult
from archiver.store.database import Database
from archiver.store.locks import RunLock

if TYPE_CHECKING:
    from archiver.masking import Masker

log = logging.getLogger("archiver.engine")
T = TypeVar("T")


class PassContext:
    """The shared state of one ``sync`` or ``backfill`` pass."""

    def __init__(
        self,
        db: Database,
        lock: RunLock,
        options: SyncOptions,
        result: RunResult,
        *,
        progress: Progress | None = None,
        masker: Masker | None = None,
    ) -> None:
        self.db = db
        self.lock = lock
        self.options = options
        self.result = result
        self.stats = result.stats
        self.progress = progress or NullProgress()
        #: ``--mask-rules``: applied to every payload the API sends and every error text,
        #: before anything is stored, keyed, logged or counted (None: no rules, no cost).
        self.masker = masker
        #: Every transaction of the pass but the writer's second lane runs on this thread.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archiver-db")
        #: ``time.monotonic()`` after which no new work starts (--max-runtime), or None.
        self.deadline = (
            time.monotonic() + options.max_runtime_s if options.max_runtime_s is not None else None
        )
        self.stop_signal: int | None = None
        #: An error that ends the pass (a fatal API error, a failing database).
        self.fatal: BaseException | None = None
        #: Why the listing failed this pass (the pass is then "failed"), if it did.
        self.listing_error: str | None = None

    async def run_db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args)`` in one transaction on the database thread."""

        def work() -> T:
            with self.db.transaction() as conn:
                return fn(conn, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    def should_stop(self) -> bool:
        """A signal, a fatal error, a lost lock or the deadline: start no new work."""
        if self.stop_signal is not None or self.fatal is not None or self.lock.lost:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def masked(self, message: str) -> str:
        """An error text as it may be stored and logged: it can quote what the API sent."""
        return message if self.masker is None else self.masker.text(message)

    def task_failed(self, task_id: str | None, message: str, *, logged: bool = False) -> None:
        """Count and log a task-level error of the pass (``task_id`` None: the listing's;
        ``logged``: already said for the whole pass, so only counted)."""
        message = self.masked(message)
        self.stats.errors += 1
        self.result.errors.append(message)
        if not logged:
            log.error(
                "task %s failed: %s", task_id or "(listing)", message, extra={"task_id": task_id}
            )

    def skipped_leased(self, count: int) -> None:
        """``count`` tasks were skipped: another live run holds their lease."""
        if count:
            self.stats.skipped_leased += count
            log.warning(
                "%d task(s) skipped: another run is working on them (it holds their lease); "
                "that run or the next pass reads them",
                count,
            )

    def listing_failed(self, message: str) -> None:
        """The listing failed: new tasks may be missing, so the pass is failed."""
        self.listing_error = message = self.masked(message)
        self.task_failed(None, message)
