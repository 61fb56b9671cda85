"""Group commit of poll saves: lanes, ordering, exactly-once (a real database)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from archiver.engine import PollSave
from archiver.models import TaskInfo, keyed_events
from archiver.store.database import Database
from archiver.store.schema import task_events, tasks
from archiver.store.tasks import insert_new_tasks
from archiver.store.writer import LANES, GroupWriter

OWNER = "test-owner"


class RecordingExecutor(ThreadPoolExecutor):
    """A one-thread executor that records which tasks each group commit it ran held."""

    def __init__(self, name: str, seen: list[tuple[str, str]]) -> None:
        super().__init__(max_workers=1, thread_name_prefix=name)
        self.seen = seen
        self.lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        (saves,) = args
        with self.lock:
            self.seen.extend((save.task.id, self._thread_name_prefix) for save in saves)
        return super().submit(fn, *args, **kwargs)


def _poll(task_id: str, count: int) -> PollSave:
    events = [{"name": f"e{i}", "timestamp": 1_764_000_000_000 + i, "id": f"{task_id}-{i}"}
              for i in range(count)]  # fmt: skip
    task = TaskInfo.model_validate({"id": task_id, "status": "running", "events": events})
    return PollSave(task=task, events=keyed_events(task.events), full_read=True, finalize=False)


def _lease(database: Database, now: datetime) -> None:
    with database.transaction() as conn:  # what a claim does (a save releases the lease)
        conn.execute(update(tasks).values(lease_owner=OWNER, lease_until=now.replace(year=2100)))


def test_lanes_keep_each_tasks_saves_together_and_store_every_event_once(
    database: Database,
) -> None:
    """A task's polls always commit on the same lane; every event is stored exactly once."""
    ids = [f"t{n:02d}" for n in range(24)]
    now = datetime(2026, 11, 30, tzinfo=UTC)
    with database.transaction() as conn:
        insert_new_tasks(conn, [_poll(task_id, 0).task for task_id in ids], now)
    seen: list[tuple[str, str]] = []
    executors = [RecordingExecutor(f"lane{n}", seen) for n in range(LANES[database.dialect])]
    writer = GroupWriter(database, executors, OWNER)

    async def poll_all(count: int) -> list[int]:
        # Queued together, as the engine's background saves are.
        return await asyncio.gather(*(writer.save(_poll(task_id, count)) for task_id in ids))

    try:
        _lease(database, now)
        first = asyncio.run(poll_all(3))
        _lease(database, now)
        second = asyncio.run(poll_all(5))  # re-reads 3 events, finds 2 new ones
    finally:
        for executor in executors:
            executor.shutdown(wait=True)
    assert (first, second) == ([3] * len(ids), [2] * len(ids))
    lanes_of = {task_id: {lane for tid, lane in seen if tid == task_id} for task_id in ids}
    assert all(len(lanes) == 1 for lanes in lanes_of.values())
    assert len({lane for _, lane in seen}) == len(executors)  # every lane took tasks
    with database.reading() as conn:
        stored = Counter(conn.execute(select(task_events.c.task_id, task_events.c.name)).all())
        counts = dict(conn.execute(select(tasks.c.id, tasks.c.event_count)).all())
        marks = dict(conn.execute(select(tasks.c.id, tasks.c.event_t)).all())
    assert stored == Counter((task_id, f"e{i}") for task_id in ids for i in range(5))
    assert counts == dict.fromkeys(ids, 5)
    assert marks == dict.fromkeys(ids, 1_764_000_000_004)
