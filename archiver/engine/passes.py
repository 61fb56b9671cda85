"""One ``sync`` or ``backfill`` pass: the listing walker, the worker pool and the pure
decisions put together.

Data flows one way: :mod:`archiver.client` fetches, :mod:`archiver.engine.decisions`
decides, :mod:`archiver.store` stores. HTTP runs concurrently on an asyncio loop; every
database write runs on the database thread (and the writer's lanes), one transaction per
group of task polls, so a task's events and its high-water mark always commit together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from archiver.client import SmoothClient
from archiver.config import ArtifactConfig, SyncOptions
from archiver.engine import decisions
from archiver.engine.context import PassContext
from archiver.engine.decisions import PollSave, TaskCursor
from archiver.engine.listing import BackfillListing, ListingWalker, discover
from archiver.engine.workers import FATAL_API_ERRORS, Item, WorkerPool
from archiver.exceptions import ApiError, ApiUrlWrong, DataRefused, LeaseLost, TaskNotFound
from archiver.models import KeyedEvent, TaskInfo, keyed_events
from archiver.progress import Progress
from archiver.stats import RunResult
from archiver.store import erasure
from archiver.store import tasks as tasks_store
from archiver.store.database import Database
from archiver.store.locks import RunLock
from archiver.store.tasks import GONE_AFTER_NOT_FOUND
from archiver.store.writer import LANES, GroupWriter
from archiver.timestamps import utcnow

if TYPE_CHECKING:
    from archiver.artifacts import ArtifactSync
    from archiver.masking import Masker

log = logging.getLogger(__name__)


class SyncEngine:
    """One ``sync`` or ``backfill`` pass over one archive (built without an event loop)."""

    def __init__(
        self,
        db: Database,
        client: SmoothClient,
        lock: RunLock,
        options: SyncOptions,
        result: RunResult,
        *,
        progress: Progress | None = None,
        masker: Masker | None = None,
    ) -> None:
        self.ctx = ctx = PassContext(db, lock, options, result, progress=progress, masker=masker)
        self.client = client
        client.retry_deadline = ctx.deadline
        client.halted = ctx.should_stop
        #: The writer's first lane shares the database thread; further lanes get their own.
        self._lane_executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"archiver-db-lane{n}")
            for n in range(1, LANES.get(db.dialect, 1))
        ]
        self._writer = GroupWriter(db, [ctx.executor, *self._lane_executors], lock.owner)
        self.listing = ListingWalker(ctx, client)
        #: (task id, message) of this pass's 404s, judged at the end (_judge_not_found).
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
                run_db=ctx.run_db,
                client=client,
                config=ArtifactConfig.from_options(options, client.config),
                owner=lock.owner,
                should_stop=lambda: ctx.stop_signal is not None,
                stats=ctx.stats,
                masker=masker,
            )

    # The pass's state, as the command runner reads and sets it.
    @property
    def result(self) -> RunResult:
        return self.ctx.result

    @property
    def progress(self) -> Progress:
        return self.ctx.progress

    @property
    def stop_signal(self) -> int | None:
        return self.ctx.stop_signal

    @stop_signal.setter
    def stop_signal(self, signum: int | None) -> None:
        self.ctx.stop_signal = signum

    @property
    def listing_error(self) -> str | None:
        return self.ctx.listing_error

    def close(self) -> None:
        for executor in (self.ctx.executor, *self._lane_executors):
            executor.shutdown(wait=True)

    # -- the two commands ------------------------------------------------------------

    async def sync(self) -> None:
        """Discover new tasks (or track the ``--task`` ids), poll every task due, revisit
        finalized tasks missing artifacts, then judge the 404s."""
        ctx, explicit = self.ctx, list(dict.fromkeys(self.ctx.options.task_ids))
        await self._sweep_temporaries()
        if explicit:
            # Named tasks are asked about even when recorded as gone; ids the API does not
            # know leave no row behind (_judge_not_found).
            new = await ctx.run_db(tasks_store.insert_task_stub_ids, explicit, utcnow())
            await self._skip_tombstones(explicit)
            self._new_explicit = set(new)
            ctx.stats.tasks_discovered += len(new)
            await ctx.run_db(tasks_store.revive_gone, explicit, utcnow(), not_found=0)
        else:
            await self._before_polling()
        due = await ctx.run_db(tasks_store.due_task_ids, utcnow(), only=explicit or None)
        await self.poll_all(due, from_zero=False)
        if self.artifacts is not None and not explicit:
            await self._revisit_artifacts()
        await self._judge_not_found()

    async def _sweep_temporaries(self) -> None:
        """``--downloads``: what transfers killed mid-way left in blob storage goes first."""
        if self.artifacts is not None and not self.ctx.should_stop():
            await self.artifacts.sweep_temporaries()

    async def _before_polling(self) -> None:
        """``--recheck-gone``, then discovery (unless ``--no-discover``)."""
        ctx = self.ctx
        if ctx.options.recheck_gone:
            revived = await ctx.run_db(
                tasks_store.revive_gone, None, utcnow(), not_found=GONE_AFTER_NOT_FOUND - 1
            )
            log.info("--recheck-gone: asking the API again about %d gone task(s)", revived)
            erased = await ctx.run_db(erasure.gone_tombstones)
            if erased:
                log.info("--recheck-gone: %d erased task(s) (tombstones) stay as they are", erased)
        if not ctx.options.discover:
            return
        try:
            await discover(ctx, self.listing)
        except FATAL_API_ERRORS:
            raise
        except ApiError as exc:
            # Known tasks are still polled; the pass is failed all the same, since new
            # tasks may be missing, and discovery resumes next pass.
            ctx.listing_failed(f"discovery stopped: {exc}")

    async def backfill(self, *, since: datetime | None, ids: Sequence[str] | None) -> None:
        """Read every task of the range (or the given ids) in full, the listing feeding
        the workers as it goes."""
        ctx = self.ctx
        await self._sweep_temporaries()
        if ids is not None:
            ctx.stats.tasks_discovered += await ctx.run_db(
                tasks_store.insert_task_stubs, ids, utcnow()
            )
            await self._skip_tombstones(ids)
            todo = await ctx.run_db(tasks_store.backfill_task_ids, since=None, only=list(ids))
            await self.poll_all(todo, from_zero=True)
            await self._judge_not_found()
            return
        queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=ctx.options.concurrency * 8)

        async def enqueue(task_ids: list[str]) -> None:
            for item in await self._claim_items(task_ids):
                await queue.put(item)

        walk = BackfillListing(ctx, self.listing, enqueue, since)
        producer = asyncio.create_task(walk.run())
        await self._pool(from_zero=True).run(queue, producer)
        await self._judge_not_found()
        if self.artifacts is not None:
            await self._revisit_artifacts()
            await self._judge_not_found()

    async def _skip_tombstones(self, task_ids: Sequence[str]) -> None:
        """Say (with -v) which named tasks are erased: never read or filled in again."""
        for task_id, when in (await self.ctx.run_db(erasure.erased_ids, task_ids)).items():
            log.info(
                "task %s was erased on %s (a tombstone): not read again",
                task_id,
                f"{when:%Y-%m-%d %H:%M}",
                extra={"task_id": task_id},
            )

    # -- polling ---------------------------------------------------------------------

    async def poll_all(
        self, task_ids: Sequence[str], *, from_zero: bool, reopen: bool = False
    ) -> None:
        """Poll these tasks with ``options.concurrency`` requests in flight.

        ``reopen`` polls finalized tasks too (to fetch artifacts they were archived without).
        """
        queue: asyncio.Queue[Item | None] = asyncio.Queue()
        for task_id, cursor in await self._claim_items(list(task_ids)):
            if reopen:
                cursor = replace(cursor, finalized=False)
            queue.put_nowait((task_id, cursor))
        await self._pool(from_zero=from_zero).run(queue)

    def _pool(self, *, from_zero: bool) -> WorkerPool:
        return WorkerPool(
            self.ctx,
            read=lambda item: self._read_task(*item, from_zero=from_zero),
            store=lambda item, save: self._store(save, item[1]),
            record_error=lambda item, message: self._save_error(
                item[0], message, item[1].error_count
            ),
        )

    def _claim(self, conn: Any, task_ids: list[str]) -> tuple[list[Item], int]:
        """Lease the tasks and read where each one's polling resumes, in one transaction;
        also how many of them another live run holds (skipped)."""
        claimed = self.ctx.lock.claim(conn, task_ids)
        got = set(claimed)
        busy = self.ctx.lock.leased_elsewhere(
            conn, [t for t in dict.fromkeys(task_ids) if t not in got]
        )
        rows = tasks_store.progress_rows(conn, claimed)
        items = [(t, TaskCursor.from_row(rows[t])) for t in claimed if t in rows]
        self.ctx.progress.add_total(len(items))
        return items, busy

    async def _claim_items(self, task_ids: list[str]) -> list[Item]:
        items, busy = await self.ctx.run_db(self._claim, task_ids)
        self.ctx.skipped_leased(busy)
        return items

    async def _read_task(
        self, task_id: str, cursor: TaskCursor, *, from_zero: bool
    ) -> PollSave | None:
        """Read a task's new events (and sweep at the end), and its artifacts when it is
        done; what to save, or None when there is nothing to save (a failure recorded)."""
        event_t = decisions.first_read(cursor, from_zero=from_zero)
        if event_t is None:
            return None
        downloads = self.artifacts is not None  # links are asked for on full reads only
        try:
            task = self._masked(
                await self.client.get_task(
                    task_id, event_t=event_t, downloads=downloads and event_t == 0
                )
            )
            # Keys are numbered per response (repeats of an event without an id), on the
            # masked content: a re-read is keyed as it was stored.
            events = keyed_events(task.events)
            full_read = event_t == 0
            if decisions.needs_sweep(task, full_read=full_read):
                sweep = self._masked(
                    await self.client.get_task(task_id, event_t=0, downloads=downloads)
                )
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
        return await self._plan(task, cursor, events, full_read=full_read)

    def _masked(self, task: TaskInfo) -> TaskInfo:
        """What the API sent, masked (``--mask-rules``) before anything else sees it."""
        masker = self.ctx.masker
        return task if masker is None else masker.task(task)

    async def _plan(
        self, task: TaskInfo, cursor: TaskCursor, events: list[KeyedEvent], *, full_read: bool
    ) -> PollSave:
        if decisions.newly_unknown_status(task, cursor):
            log.warning(
                "task %s reports status %r, which this archiver does not know: it is stored as "
                "sent and polled less and less often until the status becomes one it knows",
                task.id,
                task.status,
                extra={"task_id": task.id},
            )
        save = decisions.plan_save(
            task, cursor, events, full_read=full_read, options=self.ctx.options, now=utcnow()
        )
        if save.terminal_seen and self.artifacts is not None:
            # Links are fresh now, so artifacts are fetched at the first terminal read.
            settled = await self._settle_artifacts(task, events)
            save = decisions.with_artifacts(save, artifacts_final=settled)
        return save

    async def _store(self, save: PollSave, cursor: TaskCursor) -> None:
        """Save one poll (events and high-water mark in one transaction) and count it."""
        task_id, stats = save.task.id, self.ctx.stats
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
            self.ctx.skipped_leased(1)
            return
        stats.tasks_polled += 1
        stats.events_inserted += inserted
        if save.finalize:
            stats.tasks_finalized += 1

    async def _settle_artifacts(self, task: TaskInfo, events: Sequence[KeyedEvent]) -> bool:
        """``--downloads``: store the task's artifacts; True once each reached a final state."""
        assert self.artifacts is not None
        stamps = [ev.timestamp for _, ev in events if ev.timestamp is not None]
        outcome = await self.artifacts.settle(task, event_t=max(stamps, default=0))
        for message in outcome.errors.values():
            self.ctx.task_failed(task.id, message)
        for message in outcome.blob_errors.values():
            # The settler said it once for the pass: one line, not one per artifact.
            self.ctx.task_failed(task.id, message, logged=True)
        return outcome.final

    async def _save_error(self, task_id: str, message: str, streak: int) -> None:
        message = self.ctx.masked(message)
        await self.ctx.run_db(
            tasks_store.record_task_error,
            task_id,
            message,
            owner=self.ctx.lock.owner,
            now=utcnow(),
            backoff=decisions.error_backoff(streak, self.ctx.options),
        )
        self.ctx.task_failed(task_id, message)

    async def _revisit_artifacts(self) -> None:
        """``--downloads``: finalized tasks whose artifacts are missing or still pending are
        read again (fresh links), oldest first, until every artifact is in a final state."""
        if self.ctx.should_stop():
            return
        from archiver.artifacts import tasks_missing_artifacts  # loaded with ArtifactSync

        revisit = await self.ctx.run_db(tasks_missing_artifacts)
        if revisit:
            log.info("revisiting %d finalized task(s) for their artifacts", len(revisit))
            await self.poll_all(revisit, from_zero=True, reopen=True)

    async def _judge_not_found(self) -> None:
        """Record this pass's 404s now that the pass knows whether the URL is right
        (decisions.judge_not_found)."""
        found, self._not_found = self._not_found, []
        ctx, owner = self.ctx, self.ctx.lock.owner
        plan = decisions.judge_not_found(
            found,
            new_explicit=self._new_explicit,
            successes=self.client.successes,
            api_url=self.client.config.api_url,
        )
        for task_id in plan.drop_stubs:
            await ctx.run_db(tasks_store.delete_stub, task_id, owner=owner)
        if plan.url_wrong is not None:
            raise ApiUrlWrong(plan.url_wrong)
        for task_id, message in plan.errors:
            ctx.task_failed(task_id, message)
        for task_id, message in plan.count:
            message = ctx.masked(message)
            gone = await ctx.run_db(
                tasks_store.record_not_found,
                task_id,
                message,
                owner=owner,
                now=utcnow(),
                gone_after=GONE_AFTER_NOT_FOUND,
            )
            if gone:
                ctx.stats.tasks_gone += 1
            else:
                ctx.stats.tasks_not_found += 1
            log.warning(
                "task %s %s: %s",
                task_id,
                "is gone" if gone else "was not found (will ask again next pass)",
                message,
                extra={"task_id": task_id},
            )
