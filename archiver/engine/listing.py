"""Walking List Tasks: discovery (newest first, down to what is already known) and
backfill's walk over a range, which resumes where an interrupted walk of the same range
stopped. Where each walk goes next and what its watermark becomes are decided by
:mod:`archiver.engine.decisions`; this module does the requests and the writes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from archiver.client import SkippedItem, SmoothClient
from archiver.config import MAX_PAGE_SIZE
from archiver.engine import decisions
from archiver.engine.context import PassContext
from archiver.exceptions import DataRefused
from archiver.models import TaskInfo
from archiver.recent import RecentIds
from archiver.store import erasure
from archiver.store import state as state_store
from archiver.store import tasks as tasks_store
from archiver.timestamps import to_seconds, to_utc, utcnow

log = logging.getLogger(__name__)

#: ``on_page(valid tasks, malformed items) -> keep going?`` of a walk.
OnPage = Callable[[list[TaskInfo], list[SkippedItem]], Awaitable[bool]]


def _stamps(page: Sequence[TaskInfo], skipped: Sequence[SkippedItem]) -> list[int]:
    return decisions.page_stamps(page, [item.created_at for item in skipped])


class ListingWalker:
    """Pages through List Tasks and tracks what it lists."""

    def __init__(self, ctx: PassContext, client: SmoothClient) -> None:
        self.ctx = ctx
        self.client = client

    async def walk(
        self,
        start_t: int | None,
        page_size: int,
        on_page: OnPage,
        on_cursor: Callable[[int | None], Awaitable[None]] | None = None,
    ) -> bool:
        """Page through List Tasks from ``start_t`` down (see decisions.next_page).

        Returns True when the walk is complete (``on_page`` asked to stop, or the listing
        ended) and False when it was cut short (deadline, signal, an unusable page), so
        callers only move their watermark after a complete walk. ``on_page`` gets the
        page's valid tasks and its malformed items (logged here); the caller's inserts are
        idempotent, since page boundaries are re-read.
        """
        t, size = start_t, page_size
        while not self.ctx.should_stop():
            page = await self.client.list_tasks(before=t, limit=size)
            if self.ctx.masker is not None:  # before anything is inserted or logged
                masker = self.ctx.masker
                page.tasks = [masker.task(task, events=False) for task in page.tasks]
                page.skipped = [replace(i, message=masker.text(i.message)) for i in page.skipped]
            self._log_skipped(page.skipped)
            if not await on_page(page.tasks, page.skipped) or page.size < size:
                return True
            step = decisions.next_page(t, size, page_size, _stamps(page.tasks, page.skipped))
            if step.again:
                size = step.size
                continue
            if step.unlisted is not None:
                await self._report_unlisted(step.unlisted, page.size)
            if step.error is not None:
                self.ctx.task_failed(None, step.error)
                return False
            t, size = step.next_t, step.size
            if on_cursor is not None:
                await on_cursor(t)
        return False

    def _log_skipped(self, skipped: Sequence[SkippedItem]) -> None:
        for item in skipped:
            if item.task_id is not None:
                log.warning(
                    "%s; task %r is tracked by its id and read with Get Task instead",
                    item.message,
                    item.task_id,
                    extra={"task_id": item.task_id},
                )
            else:
                self.ctx.task_failed(
                    None,
                    f"{item.message}; no id can be read from this list item, so it is not "
                    "archived yet (the next pass lists it again)",
                )

    async def _report_unlisted(self, created_at: int, listed: int) -> None:
        """A full page of tasks sharing one ``created_at``: any more of them are beyond
        what List Tasks can return. Recorded for ``status``; a task-level error of the pass
        (partial) until an operator acknowledges it, a warning after that."""
        acknowledged = await self.ctx.run_db(
            state_store.record_unlisted_group,
            created_at,
            listed,
            command=self.ctx.result.command,
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
            self.ctx.task_failed(None, message)

    async def insert_listed(
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
        db = self.ctx.run_db
        ids = [item.task_id for item in skipped if item.task_id is not None]
        try:
            new_ids = await db(tasks_store.insert_new_tasks, page, utcnow())
            new_ids += await db(tasks_store.insert_listed_ids, ids, utcnow()) if ids else []
            return new_ids, [task.id for task in page] + ids
        except DataRefused:
            pass
        new_ids, kept, by_id = [], [], []
        for task in page:
            try:
                new_ids += await db(tasks_store.insert_new_tasks, [task], utcnow())
                kept.append(task.id)
            except DataRefused:
                by_id.append(task.id)  # tracked by its id alone
        for task_id in by_id + ids:
            try:
                new_ids += await db(tasks_store.insert_listed_ids, [task_id], utcnow())
                kept.append(task_id)
            except DataRefused as exc:
                self.ctx.task_failed(None, f"listed task {task_id!r} cannot be stored: {exc}")
        return new_ids, kept


async def discover(ctx: PassContext, walker: ListingWalker) -> None:
    """Walk List Tasks from the newest down to just below what is already known, then
    move the watermark (only after a complete walk)."""
    state = await ctx.run_db(state_store.get_state, "discovery") or {}
    horizon = utcnow().timestamp() + ctx.options.discovery_overlap_s
    known_newest = decisions.usable_watermark(state.get("newest_created_at"), horizon_s=horizon)
    stop_below = decisions.stop_below(known_newest, ctx.options.discovery_overlap_s)
    newest = known_newest
    held: list[int | None] = []  # created_at of malformed items without a usable id

    async def on_page(page: list[TaskInfo], skipped: list[SkippedItem]) -> bool:
        nonlocal newest
        new_ids, _ = await walker.insert_listed(page, skipped)
        ctx.stats.tasks_discovered += len(new_ids)
        held.extend(item.created_at for item in skipped if item.task_id is None)
        stamps = _stamps(page, skipped)
        newest = decisions.newest_plausible(newest, stamps, horizon)
        return not (stamps and stop_below is not None and min(stamps) < stop_below)

    completed = await walker.walk(None, ctx.options.page_size, on_page)
    newest = decisions.watermark_after_walk(newest, known_newest, held)
    if completed and newest is not None and newest != known_newest:
        await ctx.run_db(
            state_store.put_state, "discovery", {"newest_created_at": newest}, utcnow()
        )


@dataclass
class _Tally:
    """What a backfill walk found. Counts, not sets of ids: memory stays flat however
    long the history is; a page boundary re-read is counted once."""

    pages: int = 0
    listed: int = 0
    new: int = 0
    to_read: int = 0
    unread: int = 0
    #: Listed tasks that are tombstones (erased): never read again.
    erased: int = 0
    newest: int | None = None

    def add(self, fresh: list[str], new_ids: list[str], todo: list[str]) -> None:
        first_time, created = set(fresh), set(new_ids)
        known_before = first_time - created
        self.listed += len(fresh)
        self.new += len(created & first_time)
        self.to_read += sum(1 for task_id in todo if task_id in first_time)
        self.unread += sum(1 for task_id in todo if task_id in known_before)

    def summary(self, scope: str) -> str:
        erased = f", {self.erased} erased (tombstones, not read again)" if self.erased else ""
        return (
            f"walked {self.pages} listing page(s) {scope}: {self.listed} task(s) listed, "
            f"{self.new} new, {self.listed - self.to_read} already archived{erased}, "
            f"{self.unread} known but not yet read in full"
        )


class BackfillListing:
    """Backfill's walk of List Tasks over ``--since`` (or all history), feeding the
    workers as it goes.

    Every invocation walks the listing over the range it was asked for, so a task the
    API listed late (below anything discovery re-reads) is still found; only a walk of
    the same range that was cut short resumes, at its saved cursor.
    """

    def __init__(
        self,
        ctx: PassContext,
        walker: ListingWalker,
        enqueue: Callable[[list[str]], Awaitable[Any]],
        since: datetime | None,
    ) -> None:
        self.ctx = ctx
        self.walker = walker
        self._enqueue = enqueue
        self.since_s = since.timestamp() if since is not None else None
        self.since_key = since.isoformat() if since is not None else None
        self.scope = f"since {self.since_key}" if self.since_key else "over all history"
        self.state: dict[str, Any] = {}
        #: Ids already handed to the workers (the last pages', and the leftovers).
        self.seen = RecentIds(keep=4 * MAX_PAGE_SIZE)
        self.counted = RecentIds(keep=4 * MAX_PAGE_SIZE)
        self.tally = _Tally()
        self.horizon = utcnow().timestamp() + ctx.options.discovery_overlap_s

    async def run(self) -> None:
        resume_t = await self._load_state()
        # Tasks an earlier run tracked but did not read in full come first.
        leftover = await self.ctx.run_db(tasks_store.backfill_task_ids, since=None)
        if leftover:
            log.info("backfill: %d tracked task(s) not yet read in full come first", len(leftover))
        await self._feed(leftover)
        self.seen.pin(leftover)
        if resume_t is not None:
            log.info(
                "backfill: resuming the interrupted listing walk %s at t=%d", self.scope, resume_t
            )
        done = await self.walker.walk(
            resume_t, MAX_PAGE_SIZE, self._on_page, on_cursor=self._on_cursor
        )
        if not done:
            log.warning(
                "backfill: %s; the listing was cut short at t=%s, so the next `archiver "
                "backfill` with the same --since resumes it there",
                self.tally.summary(self.scope),
                self.state["next_t"],
            )
            return
        await self._finish(walked_all=resume_t is None)

    async def _load_state(self) -> int | None:
        state = await self.ctx.run_db(state_store.get_state, "backfill") or {}
        resume_t = state.get("next_t")
        if state.get("since") != self.since_key or state.get("listing_done") or resume_t is None:
            resume_t = None
            state = {"since": self.since_key, "next_t": None, "listing_done": False}
        self.state = state
        return resume_t

    def _in_range(self, created_at: int | None) -> bool:
        return self.since_s is None or created_at is None or to_seconds(created_at) >= self.since_s

    async def _feed(self, ids: list[str]) -> None:
        fresh = [i for i in ids if i not in self.seen]
        self.seen.update(fresh)
        if fresh:
            await self._enqueue(fresh)

    async def _on_page(self, page: list[TaskInfo], skipped: list[SkippedItem]) -> bool:
        self.tally.pages += 1
        tasks = [t for t in page if self._in_range(t.created_at)]
        items = [item for item in skipped if self._in_range(item.created_at)]
        new_ids, tracked = await self.walker.insert_listed(tasks, items)
        self.ctx.stats.tasks_discovered += len(new_ids)
        todo = await self.ctx.run_db(tasks_store.backfill_task_ids, since=None, only=tracked)
        await self._skip_tombstones(tracked)
        fresh = [task_id for task_id in tracked if task_id not in self.counted]
        self.counted.update(fresh)
        self.tally.add(fresh, new_ids, todo)
        self.tally.newest = decisions.newest_plausible(
            self.tally.newest, _stamps(page, skipped), self.horizon
        )
        await self._feed(todo)
        return len(tasks) + len(items) == len(page) + len(skipped)

    async def _skip_tombstones(self, task_ids: list[str]) -> None:
        """Count (and name, with -vv) the listed tasks that are erased: the API still
        serves them, the archive never reads or fills them in again."""
        for task_id in await self.ctx.run_db(erasure.erased_ids, task_ids):
            if task_id not in self.counted:
                self.tally.erased += 1
            log.debug(
                "task %s was erased (a tombstone): not read again",
                task_id,
                extra={"task_id": task_id},
            )

    async def _on_cursor(self, t: int | None) -> None:
        self.state["next_t"] = t
        await self.ctx.run_db(state_store.put_state, "backfill", dict(self.state), utcnow())

    async def _finish(self, *, walked_all: bool) -> None:
        self.state["listing_done"] = True
        await self.ctx.run_db(state_store.put_state, "backfill", dict(self.state), utcnow())
        tally, walked = self.tally, self.tally.summary(self.scope)
        if tally.newest is not None and walked_all:
            # A complete walk from the newest task down: discovery need not walk it again
            # (the first sync after a backfill of 100k tasks otherwise lists them all).
            await self.ctx.run_db(state_store.raise_discovery_watermark, tally.newest, utcnow())
        if not tally.listed:
            log.info(
                "backfill: %s; nothing to import: the API lists no task %s", walked, self.scope
            )
        elif not tally.to_read:
            log.info(
                "backfill: %s; nothing to import: every listed task is already archived", walked
            )
        else:
            log.info("backfill: %s", walked)
