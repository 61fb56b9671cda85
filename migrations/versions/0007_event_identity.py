"""Event identity: an event with an id is (id, name, timestamp), keeping its latest payload.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

Before, every event was keyed by a hash of id, name, timestamp and payload, so an event
whose payload the API filled in later was stored twice, and two identical events without
an id collapsed into one row. Keys of events without an id do not change (the first copy
keeps the old key; later copies get numbered keys from now on). Rows with an id are
re-keyed in place; where an event was stored twice with different payloads, the newest row
(highest id) stays and ``tasks.event_count`` is recounted.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

from archiver.models import dumps_json

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BATCH = 5000


def _key(event_id: str, name: str, timestamp: int | None) -> str:
    # Must equal archiver.models.TaskEvent.identity for an event with an id.
    text = dumps_json([event_id, name, timestamp])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def upgrade() -> None:
    bind = op.get_bind()
    events = sa.table(
        "task_events",
        sa.column("id", sa.BigInteger),
        sa.column("task_id", sa.Text),
        sa.column("event_id", sa.Text),
        sa.column("name", sa.Text),
        sa.column("timestamp", sa.BigInteger),
        sa.column("event_key", sa.Text),
    )
    # Newest first, so the first row seen for a (task, key) is the one that stays.
    rows = bind.execute(
        sa.select(
            events.c.id, events.c.task_id, events.c.event_id, events.c.name, events.c.timestamp
        )
        .where(events.c.event_id.is_not(None))
        .order_by(events.c.id.desc())
    ).all()
    keep: dict[tuple[str, str], int] = {}
    drop: list[int] = []
    updates: list[dict[str, object]] = []
    touched: set[str] = set()
    for row in rows:
        key = _key(row.event_id, row.name, row.timestamp)
        if (row.task_id, key) in keep:
            drop.append(row.id)
            touched.add(row.task_id)
            continue
        keep[(row.task_id, key)] = row.id
        updates.append({"row_id": row.id, "new_key": key})
    for start in range(0, len(drop), BATCH):
        bind.execute(events.delete().where(events.c.id.in_(drop[start : start + BATCH])))
    # Two steps, so a new key never meets an old one on the unique (task_id, event_key).
    statement = (
        events.update()
        .where(events.c.id == sa.bindparam("row_id"))
        .values(event_key=sa.bindparam("new_key"))
    )
    for start in range(0, len(updates), BATCH):
        chunk = updates[start : start + BATCH]
        bind.execute(statement, [{**u, "new_key": "~" + str(u["new_key"])} for u in chunk])
    for start in range(0, len(updates), BATCH):
        bind.execute(statement, updates[start : start + BATCH])
    if touched:
        tasks = sa.table("tasks", sa.column("id", sa.Text), sa.column("event_count", sa.Integer))
        counts: dict[str, int] = defaultdict(int)
        for task_id, count in bind.execute(
            sa.select(events.c.task_id, sa.func.count())
            .where(events.c.task_id.in_(sorted(touched)))
            .group_by(events.c.task_id)
        ):
            counts[task_id] = count
        for task_id in touched:
            bind.execute(
                tasks.update().where(tasks.c.id == task_id).values(event_count=counts[task_id])
            )


def downgrade() -> None:
    # The old keys included the payload; rows keep their new keys, which the old code
    # treats as opaque unique strings (a re-read may then store an event once more).
    pass
