"""The sync engine: discover tasks, poll the active ones, store what is new.

Data flows one way: :mod:`archiver.client` fetches, this module decides, :mod:`archiver.store`
stores. HTTP runs concurrently on an asyncio loop; every database write runs on one
dedicated thread, one transaction per task poll, so a task's events and its high-water
mark are always committed together.

Exactly-once events, whatever the API does:

* Polls ask for events strictly after ``event_t - 1`` (not ``event_t``): an event that
  shares the high-water mark's timestamp but arrives in a later poll is still returned.
  The re-read overlap is de-duplicated by the events' unique key.
* When a task turns terminal, one more read with ``event_t=0`` sweeps up anything a
  cursor can miss (events with a null timestamp, events that arrive out of order) before
  the task is finalized and never polled again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import httpx

from archiver.client import SkippedItem, SmoothClient
from archiver.config import MAX_PAGE_SIZE, ArtifactConfig, ClientConfig, SyncOptions, backoff_after
from archiver.exceptions import (
    ApiError,
    ApiUnreachable,
    ApiUrlWrong,
    ArchiverError,
    AuthError,
    CircuitOpen,
    DataRefused,
    LeaseLost,
    StorageError,
    TaskNotFound,
)
from archiver.logs import set_run_id
from archiver.models import KNOWN_STATUSES, KeyedEvent, TaskInfo, keyed_events
from archiver.progress import NullProgress, Progress
from archiver.recent import RecentIds
from archiver.stats import EXIT_INTERRUPTED, EXIT_TASK_ERRORS, RunResult
from archiver.store import runs as runs_store
from archiver.store import state as state_store
from archiver.store import tasks as tasks_store
from archiver.store.database import Database
from archiver.store.locks import RunLock
from archiver.store.tasks import GONE_AFTER_NOT_FOUND
from archiver.store.writer import LANES, GroupWriter
from archiver.timestamps import aware, seconds_in_unit_of, to_seconds, to_utc, utcnow

if TYPE_CHECKING:
    from archiver.artifacts import ArtifactSync


@dataclass(frozen=True)
class TaskCursor:
    """Where polling a task resumes, and what earlier passes learnt about it."""

    event_t: int
    full_read: bool
    finalized: bool
    error_count: int
    #: The status the last poll stored (None before the first poll).
    status: str | None = None
    #: When a pass first read the task terminal without finalizing it (a confirming read
    #: on a later pass finalizes it), None otherwise.
    terminal_seen_at: datetime | None = None
    #: Whether the archiver ever saw the task waiting, running or in an unknown status.
    seen_active: bool = False
    #: Polls in a row that found a status the archiver does not know.
    unknown_polls: int = 0

    @classmethod
    def from_row(cls, row: Any) -> TaskCursor:
        """From a row of :func:`archiver.store.tasks.progress_rows`."""
        return cls(
            event_t=row.event_t,
            full_read=row.full_read_at is not None,
            finalized=row.finalized_at is not None,
            error_count=row.error_count,
            status=row.status,
            terminal_seen_at=aware(row.terminal_seen_at),
            seen_active=bool(row.seen_active),
            unknown_polls=row.unknown_status_polls,
        )


@dataclass(frozen=True)
class PollSave:
    """What one poll of one task stores (a :class:`archiver.store.tasks.PollRecord`)."""

    task: TaskInfo
    events: Sequence[KeyedEvent]
    full_read: bool
    finalize: bool
    #: A terminal read that waits for a confirming read on a later pass.
    terminal_seen: bool = False
    #: The task was seen waiting, running or in an unknown status.
    seen_active: bool = False
    #: Polls in a row in an unknown status (0 otherwise), and when to ask again.
    unknown_polls: int = 0
    next_poll_at: datetime | None = None


log = logging.getLogger(__name__)
T = TypeVar("T")
#: A unit of work: a leased task and where its polling resumes.
_Item = tuple[str, TaskCursor]

#: Longest back-off of a failing task (the first one is SyncOptions.error_backoff_s).
ERROR_BACKOFF_CAP_S = 3600.0
#: Failed passes in a row before a task is held back (the first ones retry next pass).
BACKOFF_AFTER_FAILURES = 3
#: API errors that end the pass: nothing else will work until they are fixed.
FATAL_API_ERRORS = (AuthError, CircuitOpen, ApiUnreachable, ApiUrlWrong)
#: Allocations between two young-generation collections during a pass (CPython's default
#: is 700): a poll allocates thousands of short-lived objects, and at the default the
#: collector ran often enough to cost ~15 % of a backfill's CPU (benchmarks/backfill.py).
GC_YOUNG_THRESHOLD = 50_000


def _stamps(tasks: Sequence[TaskInfo], skipped: Sequence[SkippedItem]) -> list[int]:
    """The created_at values a listing page shows, malformed items' included."""
    stamps = [task.created_at for task in tasks if task.created_at is not None]
    return stamps + [item.created_at for item in skipped if item.created_at is not None]


class SyncEngine:
    """One ``sync`` or ``backfill`` pass over one archive."""

    def __init__(
        self,
        db: Database,
        client: SmoothClient,
        lock: RunLock,
        options: SyncOptions,
        result: RunResult,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.lock = lock
        self.options = options
        self.result = result
        self.stats = result.stats
        self.progress = progress or NullProgress()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archiver-db")
        #: The writer's first lane shares the database thread; further lanes get their own.
        self._lane_executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"archiver-db-lane{n}")
            for n in range(1, LANES.get(db.dialect, 1))
        ]
        self._writer = GroupWriter(db, [self._executor, *self._lane_executors], lock.owner)
        #: Saves committing in the background, at most ``concurrency`` at a time.
        self._saving: set[asyncio.Task[None]] = set()
        self._save_slots = asyncio.Semaphore(options.concurrency)
        loop_time = asyncio.get_running_loop().time()
        self._deadline = (
            loop_time + options.max_runtime_s if options.max_runtime_s is not None else None
        )
        client.retry_deadline = self._deadline
        self.stop_signal: int | None = None
        self._fatal: BaseException | None = None
        #: Why the listing failed this pass (the pass is then "failed"), if it did.
        self.listing_error: str | None = None
        #: (task id, message) of this pass's 404s, judged by _judge_not_found.
        self._not_found: list[tuple[str, str]] = []
        #: Ids named with --task that were not tracked before this pass.
        self._new_explicit: set[str] = set()
        #: ``--downloads``: copies recordings and downloads archives into blob storage.
        self.artifacts: ArtifactSync | None = None
        if options.downloads:
            # Imported here: a pass without --downloads never loads the artifacts package
            # (start-up time, see docs/performance.md).
            from archiver.artifacts import ArtifactSync

            self.artifacts = ArtifactSync(
                run_db=self._db,
                client=client,
                config=ArtifactConfig.from_options(options, client.config),
                owner=lock.owner,
                should_stop=lambda: self.stop_signal is not None,
                stats=self.stats,
            )

    # -- plumbing --------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args)`` in one transaction on the database thread."""

        def work() -> T:
            with self.db.transaction() as conn:
                return fn(conn, *args, **kwargs)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work)

    def should_stop(self) -> bool:
        if self.stop_signal is not None or self._fatal is not None or self.lock.lost:
            return True
        return self._deadline is not None and asyncio.get_running_loop().time() >= self._deadline

    def close(self) -> None:
        for executor in (self._executor, *self._lane_executors):
            executor.shutdown(wait=True)

    # -- discovery -------------------------------------------------------------------

    async def discover(self) -> None:
        """Walk List Tasks from the newest down to just below what is already known."""
        state = await self._db(state_store.get_state, "discovery") or {}
        known_newest: int | None = state.get("newest_created_at")
        # A created_at in the future (absurd, or in another unit) is no watermark: every
        # later pass would stop on its first page and miss the tasks beyond it.
        horizon = utcnow().timestamp() + self.options.discovery_overlap_s
        if known_newest is not None and to_seconds(known_newest) > horizon:
            known_newest = None  # one full walk replaces a watermark stored before the fix
        stop_below = None
        if known_newest is not None:
            stop_below = known_newest - seconds_in_unit_of(
                known_newest, self.options.discovery_overlap_s
            )
        newest = known_newest
        # A malformed item without a usable id cannot be tracked: the watermark stays at
        # its created_at (or where it was, when that is unreadable) so the next pass lists
        # it again.
        held: list[int | None] = []

        async def on_page(page: list[TaskInfo], skipped: list[SkippedItem]) -> bool:
            nonlocal newest
            new_ids, _ = await self._insert_listed(page, skipped)
            self.stats.tasks_discovered += len(new_ids)
            held.extend(item.created_at for item in skipped if item.task_id is None)
            stamps = _stamps(page, skipped)
            if stamps:
                plausible = [s for s in stamps if to_seconds(s) <= horizon]
                if plausible:
                    newest = max(plausible) if newest is None else max(newest, *plausible)
                if stop_below is not None and min(stamps) < stop_below:
                    return False
            return True

        completed = await self.walk_listing(None, self.options.page_size, on_page)
        if None in held:
            newest = known_newest
        elif held and newest is not None:
            newest = min(newest, *(stamp for stamp in held if stamp is not None))
        if completed and newest is not None and newest != known_newest:
            await self._db(
                state_store.put_state, "discovery", {"newest_created_at": newest}, utcnow()
            )

    async def _insert_listed(
        self, page: list[TaskInfo], skipped: Sequence[SkippedItem] = ()
    ) -> tuple[list[str], list[str]]:
        """Insert a listing page's new tasks; returns (new ids, the ids now tracked).

        A malformed item whose id can be read is tracked by that id alone: Get Task fills
        it in on its poll, so a bad list item never hides a task.

        A listed task the database cannot hold (lone surrogates, nesting too deep, NUL on
        PostgreSQL) must not end the pass: the page is then inserted task by task, such a
        task is tracked by its id alone (its poll records the problem in last_error), and
        one whose very id cannot be stored is a listing error.
        """
        ids = [item.task_id for item in skipped if item.task_id is not None]
        try:
            new_ids = await self._db(tasks_store.insert_new_tasks, page, utcnow())
            new_ids += await self._db(tasks_store.insert_listed_ids, ids, utcnow()) if ids else []
            return new_ids, [task.id for task in page] + ids
        except DataRefused:
            pass
        new_ids = []
        kept: list[str] = []
        by_id: list[str] = []  # tracked by their id alone
        for task in page:
            try:
                new_ids += await self._db(tasks_store.insert_new_tasks, [task], utcnow())
                kept.append(task.id)
            except DataRefused:
                by_id.append(task.id)
        for task_id in by_id + ids:
            try:
                new_ids += await self._db(tasks_store.insert_listed_ids, [task_id], utcnow())
                kept.append(task_id)
            except DataRefused as exc:
                self._task_failed(None, f"listed task {task_id!r} cannot be stored: {exc}")
        return new_ids, kept

    async def walk_listing(
        self,
        start_t: int | None,
        page_size: int,
        on_page: Callable[[list[TaskInfo], list[SkippedItem]], Any],
        on_cursor: Callable[[int | None], Any] | None = None,
    ) -> bool:
        """Page through List Tasks from ``start_t`` down.

        Returns True when the walk is complete (``on_page`` asked to stop, or the listing
        ended) and False when it was cut short (deadline, signal, an unusable page), so
        callers only move their watermark after a complete walk. ``on_page`` gets the
        page's valid tasks and its malformed items (logged here).

        The next page starts at the oldest ``created_at`` + 1, so the boundary group is
        re-read and tasks sharing a ``created_at`` across a page break are not lost (the
        caller's inserts are idempotent). A page made entirely of one ``created_at`` is
        re-read at the largest page size; only a group larger than that cannot be paged
        through with a strictly-before cursor: it is recorded for ``status`` and fails the
        pass until acknowledged (_report_unlisted). A cursor that does not move down (an
        API ignoring ``t``) stops the walk instead of looping forever.
        """
        t = start_t
        size = page_size
        while True:
            if self.should_stop():
                return False
            page = await self.client.list_tasks(before=t, limit=size)
            for item in page.skipped:
                if item.task_id is not None:
                    log.warning(
                        "%s; task %r is tracked by its id and read with Get Task instead",
                        item.message,
                        item.task_id,
                        extra={"task_id": item.task_id},
                    )
                else:
                    self._task_failed(
                        None,
                        f"{item.message}; no id can be read from this list item, so it is not "
                        "archived yet (the next pass lists it again)",
                    )
            keep_going = await on_page(page.tasks, page.skipped)
            if keep_going is False or page.size < size:
                return True
            stamps = _stamps(page.tasks, page.skipped)
            if not stamps:
                self._task_failed(None, f"List Tasks page at t={t} has no created_at to page by")
                return False
            oldest = min(stamps)
            if oldest == max(stamps):
                if size < MAX_PAGE_SIZE:
                    size = MAX_PAGE_SIZE  # re-read the same tie group in one bigger page
                    continue
                await self._report_unlisted(oldest, page.size)
                next_t = oldest
            else:
                next_t = oldest + 1
            if t is not None and next_t >= t:
                self._task_failed(
                    None,
                    f"List Tasks did not move below t={t} (the next page would start at "
                    f"t={next_t}): the API ignored the cursor, so listing stops here",
                )
                return False
            t = next_t
            size = page_size
            if on_cursor is not None:
                await on_cursor(t)

    async def _report_unlisted(self, created_at: int, listed: int) -> None:
        """A full page of tasks sharing one ``created_at``: any more of them are beyond
        what List Tasks can return. Recorded for ``status``; a task-level error of the pass
        (partial) until an operator acknowledges it, a warning after that."""
        acknowledged = await self._db(
            state_store.record_unlisted_group,
            created_at,
            listed,
            command=self.result.command,
            now=utcnow(),
        )
        when = to_utc(created_at)
        message = (
            f"{listed} tasks share created_at={created_at} "
            f"({when.isoformat(sep=' ') if when else 'not a date'}): a full page, the most "
            "List Tasks returns, and its strictly-before cursor cannot page inside one "
            "created_at, so no client can list any further task created at that instant. "
            "Import them by id with `archiver backfill --ids-file PATH`, then run "
            f"`archiver status --ack-unlisted {created_at}`"
        )
        if acknowledged:
            log.warning("%s (already acknowledged)", message)
        else:
            self._task_failed(None, message)

    # -- polling ---------------------------------------------------------------------

    async def poll_all(
        self, task_ids: Sequence[str], *, from_zero: bool, reopen: bool = False
    ) -> None:
        """Poll these tasks with ``options.concurrency`` requests in flight.

        ``reopen`` polls finalized tasks too (to fetch artifacts they were archived without).
        """
        queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        for task_id, cursor in await self._db(self._claim, list(task_ids)):
            if reopen:
                cursor = replace(cursor, finalized=False)
            queue.put_nowait((task_id, cursor))
        await self._run_workers(queue, from_zero=from_zero, producer=None)

    def _claim(self, conn: Any, task_ids: list[str]) -> list[_Item]:
        """Lease the tasks and read where each one's polling resumes, in one transaction."""
        claimed = self.lock.claim(conn, task_ids)
        rows = tasks_store.progress_rows(conn, claimed)
        items = [
            (task_id, TaskCursor.from_row(rows[task_id])) for task_id in claimed if task_id in rows
        ]
        self.progress.add_total(len(items))
        return items

    async def _run_workers(
        self,
        queue: asyncio.Queue[_Item | None],
        *,
        from_zero: bool,
        producer: asyncio.Task[None] | None,
    ) -> None:
        workers = [
            asyncio.create_task(self._worker(queue, from_zero=from_zero))
            for _ in range(self.options.concurrency)
        ]
        if producer is not None:
            try:
                await producer
            except ArchiverError as exc:
                self._fatal = exc  # workers drain the queue and stop
        for _ in workers:
            await queue.put(None)
        try:
            await asyncio.gather(*workers)
        finally:
            # Every save started ends (committed or failed) before the pass goes on or
            # leaves; a save records its own failure (_guarded), so none is lost here.
            await asyncio.gather(*self._saving, return_exceptions=True)
        if self._fatal is not None:
            raise self._fatal

    async def _worker(self, queue: asyncio.Queue[_Item | None], *, from_zero: bool) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            if self.should_stop():
                continue  # drain; unclaimed leases are released with the lock
            save = await self._guarded(item, self._read_task(*item, from_zero=from_zero))
            if save is None:
                self.progress.advance()
                continue
            # The worker goes back to the API while the save commits: a task's events and
            # its high-water mark still commit together, and the pass waits for every save
            # (_run_workers). The slots bound the saves in flight (memory, and back-pressure
            # when the database is the slower side).
            await self._save_slots.acquire()
            saving = asyncio.create_task(self._store_in_background(item, save))
            self._saving.add(saving)
            saving.add_done_callback(self._saving.discard)

    async def _store_in_background(self, item: _Item, save: PollSave) -> None:
        try:
            await self._guarded(item, self._store(save, item[1]))
        finally:
            self._save_slots.release()
            self.progress.advance()

    async def _guarded(self, item: _Item, step: Awaitable[T]) -> T | None:
        """Run one step of one task's poll; a failure stays with that task unless it must
        end the pass (fatal API errors, a failing database)."""
        try:
            return await step
        except (*FATAL_API_ERRORS, StorageError) as exc:
            self._fatal = exc
        except Exception as exc:  # one task must never end the pass
            log.exception("task %s: unexpected error", item[0])
            try:
                await self._save_error(
                    item[0], f"internal error: {type(exc).__name__}: {exc}", item[1].error_count
                )
            except StorageError as storage_exc:
                self._fatal = storage_exc
        return None

    async def _read_task(
        self, task_id: str, cursor: TaskCursor, *, from_zero: bool
    ) -> PollSave | None:
        """Read a task's new events (and sweep at the end), and its artifacts when it is
        done; what to save, or None when there is nothing to save (a failure recorded)."""
        if cursor.finalized:
            return None
        confirming = cursor.terminal_seen_at is not None
        # A task read terminal on an earlier pass gets one full read that confirms it.
        full = from_zero or confirming or cursor.event_t <= 0
        event_t = 0 if full else cursor.event_t - 1
        try:
            downloads = self.artifacts is not None  # links are asked for on full reads only
            task = await self.client.get_task(
                task_id, event_t=event_t, downloads=downloads and event_t == 0
            )
            # Keys are numbered per response (repeats of an event without an id).
            events = keyed_events(task.events)
            full_read = event_t == 0
            if task.is_terminal and not full_read:
                sweep = await self.client.get_task(task_id, event_t=0, downloads=downloads)
                events += keyed_events(sweep.events)
                task, full_read = sweep, True
        except TaskNotFound as exc:
            # Judged once the pass knows whether the API URL is right (_judge_not_found).
            self._not_found.append((task_id, str(exc)))
            return None
        except FATAL_API_ERRORS:
            raise
        except ApiError as exc:  # malformed payload, retries exhausted, unexpected status
            await self._save_error(task_id, str(exc), cursor.error_count)
            return None
        save = self._plan_save(task, cursor, events, full_read=full_read)
        if task.is_terminal and full_read and self.artifacts is not None:
            # Links are fresh now, so artifacts are fetched at the first terminal read.
            settled = await self._settle_artifacts(task, events)
            save = replace(save, finalize=save.finalize and settled)
        return save

    async def _store(self, save: PollSave, cursor: TaskCursor) -> None:
        """Save one poll (events and high-water mark in one transaction) and count it."""
        task_id = save.task.id
        try:
            inserted = await self._writer.save(save)
        except DataRefused as exc:
            # The database refused this task's values: that task fails, the pass goes on.
            await self._save_error(task_id, str(exc), cursor.error_count)
            return
        except LeaseLost:
            log.info(
                "task %s: another run took it over; skipped", task_id, extra={"task_id": task_id}
            )
            return
        self.stats.tasks_polled += 1
        self.stats.events_inserted += inserted
        if save.finalize:
            self.stats.tasks_finalized += 1

    def _plan_save(
        self,
        task: TaskInfo,
        cursor: TaskCursor,
        events: list[KeyedEvent],
        *,
        full_read: bool,
    ) -> PollSave:
        """What to store for this read, and whether the task is final now.

        A terminal task is final once a full read has swept its events and either the read
        confirms an earlier pass's terminal read (``confirm_after_s`` later), or the task is
        settled history: never seen active by the archiver and created longer ago than
        ``fresh_within_s`` (a backfill still costs one Get Task per task). A fresh task
        waits for that confirming read, because credits_used and artifact links may still
        settle after the status turns terminal.

        A status the archiver does not know is stored as sent, logged once per task, never
        treated as terminal, and asked about at a growing interval.
        """
        now = utcnow()
        options = self.options
        unknown = task.status not in KNOWN_STATUSES
        if unknown and cursor.status != task.status:
            log.warning(
                "task %s reports status %r, which this archiver does not know: it is stored as "
                "sent and polled less and less often until the status becomes one it knows",
                task.id,
                task.status,
                extra={"task_id": task.id},
            )
        terminal = task.is_terminal and full_read
        finalize = False
        if terminal:
            if cursor.terminal_seen_at is not None:
                age = (now - cursor.terminal_seen_at).total_seconds()
                finalize = age >= options.confirm_after_s
            else:
                created = to_utc(task.created_at)
                fresh = cursor.seen_active or created is None
                if created is not None:
                    fresh = fresh or (now - created).total_seconds() < options.fresh_within_s
                finalize = not fresh
        unknown_polls = cursor.unknown_polls + 1 if unknown else 0
        next_poll_at = None
        if unknown:
            wait = backoff_after(
                unknown_polls, first_s=options.error_backoff_s, after=1, cap_s=ERROR_BACKOFF_CAP_S
            )
            next_poll_at = now + wait if wait is not None else None
        return PollSave(
            task=task,
            events=events,
            full_read=full_read,
            finalize=finalize,
            terminal_seen=terminal,
            seen_active=not task.is_terminal,
            unknown_polls=unknown_polls,
            next_poll_at=next_poll_at,
        )

    async def _settle_artifacts(self, task: TaskInfo, events: Sequence[KeyedEvent]) -> bool:
        """``--downloads``: store the task's artifacts; True once each reached a final state."""
        assert self.artifacts is not None
        stamps = [ev.timestamp for _, ev in events if ev.timestamp is not None]
        outcome = await self.artifacts.settle(task, event_t=max(stamps, default=0))
        for message in outcome.errors.values():
            self._task_failed(task.id, message)
        return outcome.final

    def _backoff(self, streak: int) -> timedelta | None:
        """How long a task that failed ``streak`` times in a row before this failure is held
        back (see config.backoff_after)."""
        return backoff_after(
            streak + 1,
            first_s=self.options.error_backoff_s,
            after=BACKOFF_AFTER_FAILURES,
            cap_s=ERROR_BACKOFF_CAP_S,
        )

    async def _save_error(self, task_id: str, message: str, streak: int) -> None:
        backoff = self._backoff(streak)
        await self._db(
            tasks_store.record_task_error,
            task_id,
            message,
            owner=self.lock.owner,
            now=utcnow(),
            backoff=backoff,
        )
        self._task_failed(task_id, message)

    def _task_failed(self, task_id: str | None, message: str) -> None:
        self.stats.errors += 1
        self.result.errors.append(message)
        log.error("task %s failed: %s", task_id or "(listing)", message, extra={"task_id": task_id})

    # -- the two commands ------------------------------------------------------------

    async def sync(self) -> None:
        explicit = list(dict.fromkeys(self.options.task_ids))
        if explicit:
            # Named tasks are asked about even when recorded as gone; ids the API does not
            # know leave no row behind (_judge_not_found).
            self._new_explicit = set(
                await self._db(tasks_store.insert_task_stub_ids, explicit, utcnow())
            )
            self.stats.tasks_discovered += len(self._new_explicit)
            await self._db(tasks_store.revive_gone, explicit, utcnow(), not_found=0)
        else:
            if self.options.recheck_gone:
                revived = await self._db(
                    tasks_store.revive_gone, None, utcnow(), not_found=GONE_AFTER_NOT_FOUND - 1
                )
                log.info("--recheck-gone: asking the API again about %d gone task(s)", revived)
            if self.options.discover:
                try:
                    await self.discover()
                except FATAL_API_ERRORS:
                    raise
                except ApiError as exc:
                    # Known tasks are still polled; the pass is failed all the same, since
                    # new tasks may be missing, and discovery resumes next pass.
                    self._listing_failed(f"discovery stopped: {exc}")
        due = await self._db(tasks_store.due_task_ids, utcnow(), only=explicit or None)
        await self.poll_all(due, from_zero=False)
        if self.artifacts is not None and not explicit:
            await self._revisit_artifacts()
        await self._judge_not_found()

    async def _revisit_artifacts(self) -> None:
        """``--downloads``: finalized tasks whose artifacts are missing or still pending are
        read again (fresh links), oldest first, until every artifact is in a final state."""
        if self.should_stop():
            return
        from archiver.artifacts import tasks_missing_artifacts  # loaded with ArtifactSync

        revisit = await self._db(tasks_missing_artifacts)
        if revisit:
            log.info("revisiting %d finalized task(s) for their artifacts", len(revisit))
            await self.poll_all(revisit, from_zero=True, reopen=True)

    def _listing_failed(self, message: str) -> None:
        self.listing_error = message
        self._task_failed(None, message)

    async def _judge_not_found(self) -> None:
        """Record this pass's 404s now that the pass knows whether the URL is right.

        A 404 only counts towards "gone" when a well-formed answer in the same pass (List
        Tasks, or another task's Get Task) proved the API URL right; a mistyped URL answers
        404 for everything and must not bury live tasks. When nothing proved it, the pass
        is a configuration error instead (exit 2) and no task is touched.
        """
        found, self._not_found = self._not_found, []
        if not found:
            return
        for task_id, _ in found:
            if task_id in self._new_explicit:
                # An id first named in this pass that the API does not know: no row stays.
                await self._db(tasks_store.delete_stub, task_id, owner=self.lock.owner)
        if self.client.successes == 0:
            shown = ", ".join(task_id for task_id, _ in found[:5])
            raise ApiUrlWrong(
                f"Get Task answered HTTP 404 for every task asked ({len(found)}: {shown}"
                f"{', ...' if len(found) > 5 else ''}) and no answer proved the API URL "
                f"{self.client.config.api_url} right: check --api-url / ARCHIVER_API_URL "
                "(it should end in /api/v1) and the task ids. No task was recorded as gone."
            )
        for task_id, message in found:
            if task_id in self._new_explicit:
                self._task_failed(
                    task_id, f"{message} The API does not know this id; nothing was stored."
                )
                continue
            gone = await self._db(
                tasks_store.record_not_found,
                task_id,
                message,
                owner=self.lock.owner,
                now=utcnow(),
                gone_after=GONE_AFTER_NOT_FOUND,
            )
            if gone:
                self.stats.tasks_gone += 1
            else:
                self.stats.tasks_not_found += 1
            log.warning(
                "task %s %s: %s",
                task_id,
                "is gone" if gone else "was not found (will ask again next pass)",
                message,
                extra={"task_id": task_id},
            )

    async def backfill(self, *, since: datetime | None, ids: Sequence[str] | None) -> None:
        if ids is not None:
            self.stats.tasks_discovered += await self._db(
                tasks_store.insert_task_stubs, ids, utcnow()
            )
            todo = await self._db(tasks_store.backfill_task_ids, since=None, only=list(ids))
            await self.poll_all(todo, from_zero=True)
            await self._judge_not_found()
            return
        queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=self.options.concurrency * 8)
        producer = asyncio.create_task(self._backfill_listing(queue, since))
        await self._run_workers(queue, from_zero=True, producer=producer)
        await self._judge_not_found()
        if self.artifacts is not None:
            await self._revisit_artifacts()
            await self._judge_not_found()

    async def _backfill_listing(
        self, queue: asyncio.Queue[_Item | None], since: datetime | None
    ) -> None:
        """Feed the workers while the (serial) listing goes on.

        Every invocation walks the listing over the range it was asked for, so a task the
        API listed late (below anything discovery re-reads) is still found; only a walk of
        the same range that was cut short resumes, at its saved cursor.
        """
        since_s = since.timestamp() if since is not None else None
        since_key = since.isoformat() if since is not None else None
        scope = f"since {since_key}" if since_key else "over all history"
        state = await self._db(state_store.get_state, "backfill") or {}
        resume_t = state.get("next_t")
        if state.get("since") != since_key or state.get("listing_done") or resume_t is None:
            resume_t = None
            state = {"since": since_key, "next_t": None, "listing_done": False}
        seen = RecentIds(keep=4 * MAX_PAGE_SIZE)

        async def enqueue(ids: list[str]) -> None:
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            for item in await self._db(self._claim, fresh) if fresh else []:
                await queue.put(item)

        # Tasks an earlier run tracked but did not read in full come first.
        leftover = await self._db(tasks_store.backfill_task_ids, since=None)
        if leftover:
            log.info("backfill: %d tracked task(s) not yet read in full come first", len(leftover))
        await enqueue(leftover)
        seen.pin(leftover)

        def in_range(created_at: int | None) -> bool:
            return since_s is None or created_at is None or to_seconds(created_at) >= since_s

        pages = 0
        # Counts, not sets of ids: memory stays flat however long the history is. A page
        # boundary re-read is counted once (RecentIds remembers the last pages' ids).
        counted = RecentIds(keep=4 * MAX_PAGE_SIZE)
        listed = new = to_read = unread = 0
        newest: int | None = None
        horizon = utcnow().timestamp() + self.options.discovery_overlap_s

        async def on_page(page: list[TaskInfo], skipped: list[SkippedItem]) -> bool:
            nonlocal pages, listed, new, to_read, unread, newest
            pages += 1
            tasks = [t for t in page if in_range(t.created_at)]
            items = [item for item in skipped if in_range(item.created_at)]
            new_ids, tracked = await self._insert_listed(tasks, items)
            self.stats.tasks_discovered += len(new_ids)
            todo = await self._db(tasks_store.backfill_task_ids, since=None, only=tracked)
            fresh = [task_id for task_id in tracked if task_id not in counted]
            counted.update(fresh)
            first_time, created = set(fresh), set(new_ids)
            known_before = first_time - created
            listed += len(fresh)
            new += len(created & first_time)
            to_read += sum(1 for task_id in todo if task_id in first_time)
            unread += sum(1 for task_id in todo if task_id in known_before)
            plausible = [t for t in _stamps(page, skipped) if to_seconds(t) <= horizon]
            if plausible:
                newest = max(plausible) if newest is None else max(newest, *plausible)
            await enqueue(todo)
            return len(tasks) + len(items) == len(page) + len(skipped)

        async def on_cursor(t: int | None) -> None:
            state["next_t"] = t
            await self._db(state_store.put_state, "backfill", dict(state), utcnow())

        if resume_t is not None:
            log.info("backfill: resuming the interrupted listing walk %s at t=%d", scope, resume_t)
        done = await self.walk_listing(resume_t, MAX_PAGE_SIZE, on_page, on_cursor=on_cursor)
        walked = (
            f"walked {pages} listing page(s) {scope}: {listed} task(s) listed, "
            f"{new} new, {listed - to_read} already archived, "
            f"{unread} known but not yet read in full"
        )
        if not done:
            log.warning(
                "backfill: %s; the listing was cut short at t=%s, so the next `archiver "
                "backfill` with the same --since resumes it there",
                walked,
                state["next_t"],
            )
            return
        state["listing_done"] = True
        await self._db(state_store.put_state, "backfill", dict(state), utcnow())
        if newest is not None and resume_t is None:
            # A complete walk from the newest task down: discovery need not walk it again
            # (the first sync after a backfill of 100k tasks otherwise lists them all).
            await self._db(state_store.raise_discovery_watermark, newest, utcnow())
        if not listed:
            log.info("backfill: %s; nothing to import: the API lists no task %s", walked, scope)
        elif not to_read:
            log.info(
                "backfill: %s; nothing to import: every listed task is already archived", walked
            )
        else:
            log.info("backfill: %s", walked)


# --- running a whole command -------------------------------------------------------------


@dataclass(frozen=True)
class SyncPass:
    """The work of ``archiver sync``: discover new tasks, poll the active ones."""

    command: ClassVar[str] = "sync"

    async def run(self, engine: SyncEngine) -> None:
        await engine.sync()


@dataclass(frozen=True)
class BackfillPass:
    """The work of ``archiver backfill``: every task created since ``since`` (or the
    tasks ``ids``), each with all its events."""

    command: ClassVar[str] = "backfill"
    since: datetime | None = None
    ids: Sequence[str] | None = None

    async def run(self, engine: SyncEngine) -> None:
        await engine.backfill(since=self.since, ids=self.ids)


#: What :func:`run_command` runs: its ``command`` names the lock and the sync_runs row.
PassWork = SyncPass | BackfillPass


def run_command(
    work: PassWork,
    db: Database,
    client_config: ClientConfig,
    options: SyncOptions,
    *,
    wait_lock_s: float = 0.0,
    progress: Progress | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RunResult:
    """Run ``work`` (a ``sync`` or ``backfill`` pass) under its command's lock, recording
    the run in ``sync_runs``.

    ``transport`` replaces the HTTP transport (tests feed hostile payloads through it).
    """
    command = work.command
    lock = RunLock(db, command)
    lock.acquire(wait_s=wait_lock_s)
    result = RunResult(run_id=lock.owner, command=command)
    set_run_id(result.run_id)
    try:
        with db.transaction() as conn:
            runs_store.start_run(
                conn,
                run_id=result.run_id,
                command=command,
                host=socket.gethostname(),
                pid=os.getpid(),
                now=result.started_at,
            )

        def new_engine(client: SmoothClient) -> SyncEngine:
            return SyncEngine(db, client, lock, options, result, progress=progress)

        with _collector_tuned():
            asyncio.run(_run_async(work, client_config, new_engine, transport))
    except BaseException as exc:
        # An unexpected exception must not leave the run recorded as "ok" (status and
        # metrics count "ok" runs as successful passes).
        if result.outcome in ("ok", "partial"):
            result.outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            result.message = f"unexpected error: {type(exc).__name__}: {exc}"[:2000]
        raise
    finally:
        result.finished_at = utcnow()
        try:
            with db.transaction() as conn:
                runs_store.finish_run(
                    conn,
                    result.run_id,
                    outcome=result.outcome,
                    counts=result.stats.stored(),
                    message=result.message,
                    now=result.finished_at,
                )
        finally:
            lock.release()
            set_run_id(None)
    return result


@contextmanager
def _collector_tuned() -> Iterator[None]:
    """The garbage collector set for a pass: what start-up created (modules, SQLAlchemy's
    and pydantic's structures) is frozen out of every collection, and young collections
    are rarer. Restored afterwards (tests run many passes in one process)."""
    saved = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, saved[1], saved[2])
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()


async def _run_async(
    work: PassWork,
    client_config: ClientConfig,
    new_engine: Callable[[SmoothClient], SyncEngine],
    transport: httpx.AsyncBaseTransport | None,
) -> None:
    loop = asyncio.get_running_loop()
    async with SmoothClient(client_config, transport=transport) as client:
        engine = new_engine(client)
        result = engine.result

        def on_signal(signum: int) -> None:
            if engine.stop_signal is not None:
                # A second signal means "now": default action, no more waiting.
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            engine.stop_signal = signum
            log.warning(
                "stopping after the writes in flight (signal %s); send it again to stop now",
                signal.Signals(signum).name,
            )

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await work.run(engine)
        except ArchiverError as exc:
            result.outcome = "failed"
            result.message = str(exc)
            result.exit_code = exc.exit_code
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            result.stats.requests = client.requests
            if engine.artifacts is not None:
                await engine.artifacts.aclose()
            engine.close()
            engine.progress.close()
        if result.outcome == "failed":
            return
        verdict = _pass_outcome(
            result,
            successes=client.successes,
            stop_signal=engine.stop_signal,
            listing_error=engine.listing_error,
            api_url=client_config.api_url,
        )
        if verdict is not None:
            result.outcome, result.exit_code, result.message = verdict


def _pass_outcome(
    result: RunResult,
    *,
    successes: int,
    stop_signal: int | None,
    listing_error: str | None,
    api_url: str,
) -> tuple[str, int, str] | None:
    """The outcome, exit code and message of a pass that raised no error, or None when
    it stays "ok": the rules, in order."""
    stats = result.stats
    if stats.requests and not successes and stop_signal is None:
        # Not one well-formed answer: the pass did not archive anything, whatever the
        # reason (each failure is logged above); health must not look green.
        return (
            "failed",
            EXIT_TASK_ERRORS,
            f"no request to the Smooth API at {api_url} succeeded in this "
            f"pass ({stats.requests} sent); see the errors above",
        )
    if listing_error is not None and stop_signal is None:
        return (
            "failed",
            EXIT_TASK_ERRORS,
            f"the listing failed, so new tasks may be missing: {listing_error}",
        )
    if stop_signal is not None:
        return (
            "interrupted",
            EXIT_INTERRUPTED.get(stop_signal, 1),
            f"stopped by signal {signal.Signals(stop_signal).name}",
        )
    if stats.errors:
        return (
            "partial",
            EXIT_TASK_ERRORS,
            f"{stats.errors} error(s), the first: {result.errors[0]}"[:2000]
            if result.errors
            else f"{stats.errors} task(s) failed; see tasks.last_error",
        )
    return None
