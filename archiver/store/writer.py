"""Saving polls: the storage side of the engine's hot path.

The engine decides *what* to save (a :class:`~archiver.store.tasks.PollRecord` per polled
task); this module decides *how*: polls that queue up while a transaction runs share the next one
(group commit), and a batch that fails is saved again task by task, each in its own
SAVEPOINT, so a failure stays with the task that caused it. Either way a task's events and
its high-water mark commit together. Batching adds no waiting: a batch is whatever queued
up while the previous one ran. On PostgreSQL two lanes (threads, connections) commit at
once, a task always on the same one; SQLite has one writer.

Every error leaves this module as an :class:`~archiver.exceptions.ArchiverError`:
``LeaseLost`` (another run took the task), ``DataRefused`` (the database refused that task's
values) or ``StorageError`` (the database itself failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import SQLAlchemyError

from archiver.exceptions import LeaseLost, StorageError
from archiver.store.database import Database
from archiver.store.errors import VALUE_ERRORS, wrap_error
from archiver.store.tasks import PollRecord, save_polls
from archiver.timestamps import utcnow

#: A saved poll's outcome: how many of its events were new, or why it was not saved.
Outcome = int | Exception


#: Group commits that may run at once, per database: SQLite has one writer at a time;
#: PostgreSQL overlaps one commit's server work with the next one's (benchmarks/).
LANES = {"sqlite": 1, "postgresql": 2}


class _Lane:
    """One stream of group commits, on its own executor (one thread): a lane runs one
    transaction at a time, on a connection of its own while it runs."""

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self.executor = executor
        self.pending: list[tuple[PollRecord, asyncio.Future[int]]] = []
        self.flusher: asyncio.Task[None] | None = None


class GroupWriter:
    """Group commit of poll saves on the database threads (see the module docstring).

    ``executors``: one per lane. A task's saves always go to the same lane (by its id), so
    they commit in order, and two lanes never touch the same rows.
    """

    def __init__(self, db: Database, executors: Sequence[ThreadPoolExecutor], owner: str) -> None:
        self.db = db
        self.owner = owner
        self._lanes = [_Lane(executor) for executor in executors]

    async def save(self, save: PollRecord) -> int:
        """Queue one poll's save; returns how many of its events were new once committed.

        Raises LeaseLost, DataRefused or StorageError for this save alone.
        """
        lane = self._lanes[hash(save.task.id) % len(self._lanes)]
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        lane.pending.append((save, future))
        if lane.flusher is None or lane.flusher.done():
            lane.flusher = asyncio.create_task(self._flush(lane))
        return await future

    async def _flush(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        while lane.pending:
            batch, lane.pending = lane.pending, []
            saves = [save for save, _ in batch]
            outcomes: list[Outcome]
            try:
                outcomes = await loop.run_in_executor(lane.executor, self._run, saves)
            except Exception as exc:  # the transaction itself failed (or a bug): every save did
                outcomes = [exc] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _run(self, saves: list[PollRecord]) -> list[Outcome]:
        try:
            with self.db.transaction() as conn:
                return list(save_polls(conn, saves, owner=self.owner, now=utcnow()))
        except (LeaseLost, StorageError):
            # One task (a lost lease, data the database refuses, or a failure the driver
            # does not classify) must not fail the batch: task by task tells which.
            return self._one_by_one(saves)

    def _one_by_one(self, saves: list[PollRecord]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with self.db.transaction() as conn:
            now = utcnow()
            for save in saves:
                try:
                    with conn.begin_nested():
                        outcomes.append(save_polls(conn, [save], owner=self.owner, now=now)[0])
                except LeaseLost as exc:
                    outcomes.append(exc)
                except (SQLAlchemyError, *VALUE_ERRORS) as exc:
                    outcomes.append(wrap_error(exc))
        return outcomes
