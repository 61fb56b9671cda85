"""The SQL of ``archiver mask --apply``: reading archived content in batches and writing
it back masked (archiver.masking.archive decides what changes).

Writes run in the caller's transaction, which must be
:meth:`archiver.store.database.Database.erasing` (secure delete on SQLite) and hold the
tasks' leases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, update

from archiver.jsonvalues import loads_json
from archiver.models import event_key
from archiver.store.schema import artifacts, sync_runs, task_events, tasks


def exact(typed: Any, raw: str | None) -> Any:
    """A JSON column's value as the API sent it: its ``*_raw`` twin where set."""
    return typed if raw is None else loads_json(raw)


def _task_rows() -> Any:
    """What masking reads of tasks; tombstones left out (they keep no content)."""
    c = tasks.c
    return select(c.id, c.payload, c.payload_raw, c.last_error, c.masked_rules).where(
        c.erased_at.is_(None)
    )


def task_batch(conn: Connection, after: str | None, limit: int) -> list[Row[Any]]:
    """The next ``limit`` tasks by id after ``after``."""
    query = _task_rows().order_by(tasks.c.id).limit(limit)
    if after is not None:
        query = query.where(tasks.c.id > after)
    return list(conn.execute(query))


def task_batch_of(conn: Connection, task_ids: Sequence[str]) -> list[Row[Any]]:
    """These tasks (a batch: at most a few hundred ids)."""
    query = _task_rows().where(tasks.c.id.in_(list(task_ids))).order_by(tasks.c.id)
    return list(conn.execute(query))


def event_chunk(
    conn: Connection, task_id: str, after_row: int | None, limit: int
) -> list[Row[Any]]:
    """The next ``limit`` event rows of a task by row id after ``after_row``."""
    c = task_events.c
    query = (
        select(
            c.id,
            c.event_key,
            c.event_id,
            c.name,
            c.timestamp,
            c.payload,
            c.payload_raw,
            c.extra,
            c.extra_raw,
            c.masked_rules,
        )
        .where(c.task_id == task_id)
        .order_by(c.id)
        .limit(limit)
    )
    if after_row is not None:
        query = query.where(c.id > after_row)
    return list(conn.execute(query))


def artifact_texts(conn: Connection, task_ids: Sequence[str]) -> dict[str, list[Any]]:
    """task id -> its artifact rows' texts (source URL, last error)."""
    query = select(
        artifacts.c.task_id, artifacts.c.kind, artifacts.c.source_url, artifacts.c.last_error
    ).where(artifacts.c.task_id.in_(list(task_ids)))
    found: dict[str, list[Any]] = {}
    for row in conn.execute(query):
        found.setdefault(row.task_id, []).append(row)
    return found


def update_task(conn: Connection, task_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(tasks).where(tasks.c.id == task_id).values(**values))


def update_event(conn: Connection, row_id: int, values: dict[str, Any]) -> None:
    conn.execute(update(task_events).where(task_events.c.id == row_id).values(**values))


def update_artifact(conn: Connection, task_id: str, kind: str, values: dict[str, Any]) -> None:
    conn.execute(
        update(artifacts)
        .where(artifacts.c.task_id == task_id, artifacts.c.kind == kind)
        .values(**values)
    )


def rekey_events(conn: Connection, task_id: str, identities: Sequence[tuple[int, str]]) -> int:
    """Give event rows (row id, identity) the keys their masked content has: the first
    copy of an identity not stored yet, else the next repeat number free in the task (two
    events that differ only in masked text are both kept, as repeats). Returns how many
    keys changed.

    The rows first move to temporary keys, so a key one of them leaves can be taken by
    another and the unique (task_id, event_key) holds throughout."""
    if not identities:
        return 0
    c = task_events.c
    move = update(task_events).where(c.id == bindparam("row_id")).values(event_key=bindparam("k"))
    conn.execute(move, [{"row_id": row_id, "k": f"masking:{row_id}"} for row_id, _ in identities])
    taken: dict[str, set[str]] = {}
    keys = []
    for row_id, identity in identities:
        key = _free_key(conn, task_id, identity, taken.setdefault(identity, set()))
        keys.append({"row_id": row_id, "k": key})
    conn.execute(move, keys)
    return len(keys)


def _free_key(conn: Connection, task_id: str, identity: str, taken: set[str]) -> str:
    """The first key of ``identity`` (copy 0, 1, ...) neither stored in the task nor in
    ``taken`` (given out in this call); adds it to ``taken``."""
    start = 0
    while True:
        candidates = [event_key(identity, n) for n in range(start, start + 64)]
        stored = set(
            conn.scalars(
                select(task_events.c.event_key).where(
                    task_events.c.task_id == task_id, task_events.c.event_key.in_(candidates)
                )
            )
        )
        for key in candidates:
            if key not in stored and key not in taken:
                taken.add(key)
                return key
        start += 64


def run_messages(conn: Connection, after: int | None, limit: int) -> list[Row[Any]]:
    """The next ``limit`` finished runs with a message (why a pass failed, which may quote
    what the API sent), by id after ``after``."""
    c = sync_runs.c
    query = (
        select(c.id, c.message)
        .where(c.message.is_not(None), c.outcome != "running")
        .order_by(c.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(c.id > after)
    return list(conn.execute(query))


def update_run_message(conn: Connection, run_row: int, message: str) -> None:
    conn.execute(update(sync_runs).where(sync_runs.c.id == run_row).values(message=message))
