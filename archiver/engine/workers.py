"""The worker pool of a pass: workers take leased tasks from a queue, read each from the
API and hand what to save to a background save, so a worker goes back to the API while
the save commits. The client keeps ``concurrency`` Get Task requests in flight; a few more
workers than that keep every slot busy (:func:`worker_count`).

A task's events and its high-water mark still commit together (one save), at most
``concurrency`` saves are in flight (memory, and back-pressure when the database is the
slower side), and the pool returns only once every save it started has committed or
failed. A failure stays with its task unless it must end the pass (a fatal API error, a
failing database): then the workers drain the queue and the error is raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from archiver.engine.context import PassContext
from archiver.engine.decisions import PollSave, TaskCursor
from archiver.exceptions import (
    ApiUnreachable,
    ApiUrlWrong,
    ArchiverError,
    AuthError,
    CircuitOpen,
    RequestWithheld,
    StorageError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A unit of work: a leased task and where its polling resumes.
Item = tuple[str, TaskCursor]
#: API errors that end the pass: nothing else will work until they are fixed.
FATAL_API_ERRORS = (AuthError, CircuitOpen, ApiUnreachable, ApiUrlWrong)


def worker_count(concurrency: int) -> int:
    """How many workers a pass runs for ``concurrency`` Get Task requests in flight.

    The client holds the request slots (``SmoothClient``); the workers beyond them wait
    there with their request ready, so a slot is taken again the moment an answer comes
    in, not after that answer was parsed, planned and handed to its save.
    """
    return concurrency + max(2, concurrency // 8)


class WorkerPool:
    """Runs ``read`` then ``store`` for each queued task (see the module docstring)."""

    def __init__(
        self,
        ctx: PassContext,
        *,
        read: Callable[[Item], Awaitable[PollSave | None]],
        store: Callable[[Item, PollSave], Awaitable[None]],
        record_error: Callable[[Item, str], Awaitable[None]],
    ) -> None:
        self.ctx = ctx
        self._read = read
        self._store = store
        self._record_error = record_error
        #: Saves committing in the background, at most ``concurrency`` at a time.
        self._saving: set[asyncio.Task[None]] = set()
        self._save_slots = asyncio.Semaphore(ctx.options.concurrency)

    async def run(
        self, queue: asyncio.Queue[Item | None], producer: asyncio.Task[None] | None = None
    ) -> None:
        """Work through ``queue`` (fed by ``producer`` while it runs, if given) until it
        is drained and every save has ended; raise the error that ended the pass, if any."""
        workers = [
            asyncio.create_task(self._worker(queue))
            for _ in range(worker_count(self.ctx.options.concurrency))
        ]
        try:
            if producer is not None:
                try:
                    await producer
                except ArchiverError as exc:
                    self.ctx.fatal = exc  # workers drain the queue and stop
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            # Cancelled ("stop now", or an error): no worker or listing outlives the pool.
            started = [*workers, *([producer] if producer is not None else [])]
            for task in started:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)
            # Every save started ends (committed or failed) before the pass goes on or
            # leaves; a save records its own failure (_guarded), so none is lost here.
            await asyncio.gather(*self._saving, return_exceptions=True)
        if self.ctx.fatal is not None:
            raise self.ctx.fatal

    async def _worker(self, queue: asyncio.Queue[Item | None]) -> None:
        while (item := await queue.get()) is not None:
            if self.ctx.should_stop():
                continue  # drain; unclaimed leases are released with the lock
            save = await self._guarded(item, self._read(item))
            if save is None:
                self.ctx.progress.advance()
                continue
            await self._save_slots.acquire()
            saving = asyncio.create_task(self._store_in_background(item, save))
            self._saving.add(saving)
            saving.add_done_callback(self._saving.discard)

    async def _store_in_background(self, item: Item, save: PollSave) -> None:
        try:
            await self._guarded(item, self._store(item, save))
        finally:
            self._save_slots.release()
            self.ctx.progress.advance()

    async def _guarded(self, item: Item, step: Awaitable[T]) -> T | None:
        """Run one step of one task's poll; a failure stays with that task unless it must
        end the pass (fatal API errors, a failing database)."""
        try:
            return await step
        except RequestWithheld:
            pass  # the pass is stopping: nothing was read, the next pass reads the task
        except (*FATAL_API_ERRORS, StorageError) as exc:
            self.ctx.fatal = exc
        except Exception as exc:  # one task must never end the pass
            log.exception("task %s: unexpected error", item[0])
            try:
                await self._record_error(item, f"internal error: {type(exc).__name__}: {exc}")
            except StorageError as storage_exc:
                self.ctx.fatal = storage_exc
        return None
