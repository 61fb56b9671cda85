"""Task rows: tracking listed and named tasks, choosing what to poll, storing polls.

Every API column a statement here writes comes from :mod:`archiver.store.columns`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Integer,
    and_,
    bindparam,
    case,
    func,
    select,
    update,
)

from archiver.exceptions import LeaseLost
from archiver.models import KeyedEvent, TaskInfo
from archiver.store import columns
from archiver.store.engines import dialect_insert
from archiver.store.events import insert_events
from archiver.store.schema import UtcDateTime, task_events, tasks

#: 404s in a row, each in a pass that proved the API URL right, before a task is gone.
GONE_AFTER_NOT_FOUND = 3


def insert_new_tasks(conn: Connection, listed: Sequence[TaskInfo], now: datetime) -> list[str]:
    """Insert the listed tasks not yet known; returns the ids that were new."""
    dialect, api = conn.dialect.name, columns.TASK_COLUMNS
    rows = {
        task.id: {"id": task.id, "first_seen_at": now, **api.values(task, dialect)}
        for task in listed
    }
    return _insert_listed_rows(conn, rows, now)


def insert_listed_ids(conn: Connection, task_ids: Iterable[str], now: datetime) -> list[str]:
    """Track listed tasks known only by id (their list item was malformed; Get Task fills
    them in); returns the ids that were new."""
    rows = {task_id: {"id": task_id, "first_seen_at": now} for task_id in task_ids}
    return _insert_listed_rows(conn, rows, now)


def _insert_listed_rows(
    conn: Connection, rows: dict[str, dict[str, Any]], now: datetime
) -> list[str]:
    """Insert the rows of listed tasks not yet known. A listed task recorded as gone (e.g.
    by a pass against a wrong URL) is active again: the API lists it."""
    new = _insert_missing_tasks(conn, rows)
    if len(new) < len(rows):
        fresh = set(new)
        # One more credible 404 buries it again: a task the API lists but answers 404 for
        # costs one request per pass, not three.
        again = [task_id for task_id in rows if task_id not in fresh]
        revive_gone(conn, again, now, not_found=GONE_AFTER_NOT_FOUND - 1)
    return new


def insert_task_stubs(conn: Connection, task_ids: Iterable[str], now: datetime) -> int:
    """Track tasks known only by id (``--task``, ``--ids-file``); returns how many were new."""
    return len(insert_task_stub_ids(conn, task_ids, now))


def insert_task_stub_ids(conn: Connection, task_ids: Iterable[str], now: datetime) -> list[str]:
    """Track tasks known only by id; returns the ids that were new."""
    rows = {task_id: {"id": task_id, "first_seen_at": now} for task_id in task_ids}
    return _insert_missing_tasks(conn, rows)


def delete_stub(conn: Connection, task_id: str, *, owner: str) -> None:
    """Remove a task this run added by id and that was never read (the API does not know
    it): an unknown ``--task`` id leaves no row behind."""
    conn.execute(
        tasks.delete().where(
            tasks.c.id == task_id,
            tasks.c.lease_owner == owner,
            tasks.c.last_polled_at.is_(None),
            tasks.c.full_read_at.is_(None),
        )
    )


def revive_gone(
    conn: Connection, task_ids: Sequence[str] | None, now: datetime, *, not_found: int
) -> int:
    """Put tasks recorded as gone back among the active ones (all of them when ``task_ids``
    is None); ``not_found`` is where their 404 count restarts. Returns how many."""
    # A tombstone stays erased, listed or named again or not.
    query = update(tasks).where(tasks.c.gone_at.is_not(None), tasks.c.erased_at.is_(None))
    if task_ids is not None:
        query = query.where(tasks.c.id.in_(list(task_ids)))
    result = conn.execute(
        query.values(gone_at=None, finalized_at=None, next_poll_at=None, not_found_count=not_found)
    )
    return int(result.rowcount or 0)


def _insert_missing_tasks(conn: Connection, rows: dict[str, dict[str, Any]]) -> list[str]:
    """INSERT the rows whose id is not in ``tasks`` yet (ON CONFLICT DO NOTHING covers a
    concurrent insert); returns their ids. Plain executemany, no RETURNING (see
    create_db_engine)."""
    ids = list(rows)
    known: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        known.update(conn.scalars(select(tasks.c.id).where(tasks.c.id.in_(chunk))))
    new = [task_id for task_id in ids if task_id not in known]
    if not new:
        return []
    # Uniform keys per row: executemany needs every row to name the same columns.
    keys = set().union(*(rows[task_id].keys() for task_id in new))
    params = [{key: rows[task_id].get(key) for key in keys} for task_id in new]
    table = columns.TASK_COLUMNS.table
    conn.execute(dialect_insert(conn, table).on_conflict_do_nothing(index_elements=["id"]), params)
    return new


def due_task_ids(
    conn: Connection, now: datetime, *, only: Sequence[str] | None = None
) -> list[str]:
    """Tasks ``sync`` should poll now: not finalized and not in error back-off.

    Least recently polled first (never polled before all), so a pass that ``--max-runtime``
    cuts short leaves the tasks it just polled, not the same old ones every time.
    """
    query = (
        select(tasks.c.id)
        .where(tasks.c.finalized_at.is_(None))
        .where((tasks.c.next_poll_at.is_(None)) | (tasks.c.next_poll_at <= now))
        .order_by(tasks.c.last_polled_at.asc().nulls_first(), tasks.c.created_at.desc(), tasks.c.id)
    )
    if only is not None:
        query = query.where(tasks.c.id.in_(list(only)))
    return list(conn.scalars(query))


def backfill_task_ids(
    conn: Connection, *, since: int | None, only: Sequence[str] | None = None
) -> list[str]:
    """Tasks a backfill still has to read in full: never read from event_t=0, not finalized."""
    query = (
        select(tasks.c.id)
        .where(tasks.c.finalized_at.is_(None))
        .where(tasks.c.full_read_at.is_(None))
        .order_by(tasks.c.created_at.desc(), tasks.c.id)
    )
    if since is not None:
        query = query.where(tasks.c.created_at >= since)
    if only is not None:
        query = query.where(tasks.c.id.in_(list(only)))
    return list(conn.scalars(query))


def progress_rows(conn: Connection, task_ids: Sequence[str]) -> dict[str, Any]:
    """What earlier passes recorded about polling each task (missing ids are left out):
    the columns the engine's cursor is made of."""
    found: dict[str, Any] = {}
    for start in range(0, len(task_ids), 500):
        chunk = list(task_ids[start : start + 500])
        query = select(
            tasks.c.id,
            tasks.c.event_t,
            tasks.c.full_read_at,
            tasks.c.finalized_at,
            tasks.c.error_count,
            tasks.c.status,
            tasks.c.terminal_seen_at,
            tasks.c.seen_active,
            tasks.c.unknown_status_polls,
        ).where(tasks.c.id.in_(chunk))
        for row in conn.execute(query):
            found[row.id] = row
    return found


class PollRecord(Protocol):
    """What one poll of one task stores (the engine's ``PollSave``)."""

    @property
    def task(self) -> TaskInfo: ...
    @property
    def events(self) -> Sequence[KeyedEvent]: ...
    @property
    def full_read(self) -> bool: ...
    @property
    def finalize(self) -> bool: ...
    @property
    def terminal_seen(self) -> bool: ...
    @property
    def seen_active(self) -> bool: ...
    @property
    def unknown_polls(self) -> int: ...
    @property
    def next_poll_at(self) -> datetime | None: ...


def save_polls(
    conn: Connection, saves: Sequence[PollRecord], *, owner: str, now: datetime
) -> list[int]:
    """Store several polls in the caller's transaction; returns new events per save.

    One INSERT for every event of the batch and one executemany UPDATE of the tasks, so a
    group commit costs a handful of round trips whatever its size. Each task's events and
    its high-water mark (which only moves forwards) land in the same transaction. Raises
    LeaseLost when another run took any of the tasks meanwhile: the caller rolls back.
    """
    if not saves:
        return []
    ids = [save.task.id for save in saves]
    insert_events(conn, [(save.task.id, save.events) for save in saves], now)
    # event_count is recounted, not incremented: exact whatever happened before, and it
    # tells how many of this batch's events were new without a slow INSERT ... RETURNING.
    # One query reads both: tasks.event_count still holds the count before this insert
    # (the UPDATE below sets it), the subquery counts the rows stored now.
    stored = (
        select(func.count())
        .select_from(task_events)
        .where(task_events.c.task_id == tasks.c.id)
        .scalar_subquery()
    )
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    for task_id, recorded, now_stored in conn.execute(
        select(tasks.c.id, tasks.c.event_count, stored).where(tasks.c.id.in_(ids))
    ):
        before[task_id], after[task_id] = recorded, now_stored
    api = columns.TASK_COLUMNS
    params = []
    for save in saves:
        values = api.values(save.task, conn.dialect.name)
        stamps = [ev.timestamp for _, ev in save.events if ev.timestamp is not None]
        params.append(
            {
                "p_id": save.task.id,
                "p_owner": owner,
                "p_now": now,
                "p_event_count": after.get(save.task.id, 0),
                "p_high": max(stamps) if stamps else None,
                "p_full_read": save.full_read,
                "p_finalize": save.finalize,
                "p_terminal_seen": save.terminal_seen,
                "p_seen_active": save.seen_active,
                "p_unknown_polls": save.unknown_polls,
                "p_next_poll_at": save.next_poll_at,
                **{f"p_{name}": value for name, value in values.items()},
            }
        )
    result = conn.execute(_poll_update(api), params)
    if result.rowcount != len(saves):
        raise LeaseLost(", ".join(ids))
    return [after.get(task_id, 0) - before.get(task_id, 0) for task_id in ids]


@functools.cache
def _poll_update(api: columns.TaskColumns) -> Any:
    """The UPDATE behind :func:`save_polls`, one statement for every kind of poll: the
    API columns as declared, then the archiver's own bookkeeping."""
    p = bindparam
    now = p("p_now", type_=UtcDateTime)
    high = p("p_high", type_=BigInteger)
    t = api.table
    return (
        update(t)
        # A task erased meanwhile is never filled in again: the save is then a lost lease.
        .where(t.c.id == p("p_id"), t.c.lease_owner == p("p_owner"), t.c.erased_at.is_(None))
        .values(
            **api.update_assignments("p_"),
            event_count=p("p_event_count", type_=Integer),
            event_t=case(
                (and_(high.is_not(None), t.c.event_t < high), high),
                else_=t.c.event_t,
            ),
            full_read_at=case(
                (p("p_full_read", type_=Boolean), func.coalesce(t.c.full_read_at, now)),
                else_=t.c.full_read_at,
            ),
            finalized_at=case((p("p_finalize", type_=Boolean), now), else_=t.c.finalized_at),
            terminal_seen_at=case(
                (p("p_terminal_seen", type_=Boolean), func.coalesce(t.c.terminal_seen_at, now)),
                else_=None,
            ),
            seen_active=case((p("p_seen_active", type_=Boolean), True), else_=t.c.seen_active),
            unknown_status_polls=p("p_unknown_polls", type_=Integer),
            last_polled_at=now,
            last_error=None,
            error_count=0,
            next_poll_at=p("p_next_poll_at", type_=UtcDateTime),
            gone_at=None,
            not_found_count=0,
            lease_owner=None,
            lease_until=None,
        )
    )


def record_task_error(
    conn: Connection,
    task_id: str,
    message: str,
    *,
    owner: str,
    now: datetime,
    backoff: timedelta | None,
) -> None:
    """Record a failed poll on the task; hold it back for ``backoff`` (None: not at all)."""
    conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.lease_owner == owner)
        .values(
            last_error=message[:2000],
            error_count=tasks.c.error_count + 1,
            last_polled_at=now,
            next_poll_at=None if backoff is None else now + backoff,
            lease_owner=None,
            lease_until=None,
        )
    )


def record_not_found(
    conn: Connection,
    task_id: str,
    message: str,
    *,
    owner: str,
    now: datetime,
    gone_after: int,
) -> bool:
    """A credible 404 for the task (its pass proved the API URL right). One 404 can still be
    a glitch (read-after-create lag, a proxy): the task is asked again next pass and only
    recorded as gone, finalized and not polled again, after ``gone_after`` 404s in a row.
    Returns whether it is now gone."""
    gone = tasks.c.not_found_count + 1 >= gone_after
    row = conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.lease_owner == owner)
        .values(
            not_found_count=tasks.c.not_found_count + 1,
            last_error=message[:2000],
            last_polled_at=now,
            next_poll_at=None,
            gone_at=case((gone, now), else_=tasks.c.gone_at),
            finalized_at=case((gone, now), else_=tasks.c.finalized_at),
            lease_owner=None,
            lease_until=None,
        )
        .returning(tasks.c.gone_at)
    ).first()
    return row is not None and row.gone_at is not None
