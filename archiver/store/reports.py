"""The analysts' views (migration 0003) as ``report`` and the web view read them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Date,
    DateTime,
    Float,
    Integer,
    Numeric,
    Select,
    Text,
    column,
    select,
    table,
)

from archiver.store.schema import tasks

#: The views, as lightweight SQLAlchemy selectables (not part of schema's
#: metadata: they are created by migration 0003, not by create_all or autogenerate).
credits_by_day = table(
    "credits_by_day",
    column("day", Date),
    column("status", Text),
    column("device", Text),
    column("tasks", BigInteger),
    column("credits_used", BigInteger),
    column("usd", Numeric(20, 2)),
)
task_summary = table(
    "task_summary",
    column("task_id", Text),
    column("status", Text),
    column("device", Text),
    column("credits_used", BigInteger),
    column("usd", Numeric(20, 2)),
    column("created_at_utc", DateTime(timezone=True)),
    column("day", Date),
    column("finalized_at", DateTime(timezone=True)),
    column("duration_s", Float),
    column("events", Integer),
    column("first_event_utc", DateTime(timezone=True)),
    column("last_event_utc", DateTime(timezone=True)),
    column("recording_state", Text),
    column("downloads_state", Text),
    column("output_type", Text),
    column("output_text", Text),
)
event_counts = table(
    "event_counts",
    column("task_id", Text),
    column("name", Text),
    column("events", Integer),
    column("first_timestamp_utc", DateTime(timezone=True)),
    column("last_timestamp_utc", DateTime(timezone=True)),
)


def _in_range(query: Select[Any], day: Any, since: date | None, until: date | None) -> Select[Any]:
    if since is not None:
        query = query.where(day >= since)
    if until is not None:
        query = query.where(day <= until)
    return query


def credits_rows(conn: Connection, *, since: date | None, until: date | None) -> Sequence[Any]:
    """``credits_by_day`` rows (day, status, device, tasks, credits_used) in the range."""
    view = credits_by_day
    query = select(view.c.day, view.c.status, view.c.device, view.c.tasks, view.c.credits_used)
    return conn.execute(_in_range(query, view.c.day, since, until)).all()


def known_statuses(conn: Connection) -> list[str]:
    """Every status an archived task has, sorted."""
    return sorted(s for s in conn.scalars(select(task_summary.c.status).distinct()) if s)


def top_rows(
    conn: Connection, *, limit: int, since: date | None, until: date | None, status: str | None
) -> Sequence[Any]:
    """The ``limit`` most expensive tasks of ``task_summary`` (credits, then id), with
    each task's output as sent (``output``, ``output_raw``) for a preview of any JSON."""
    view = task_summary
    query = (
        select(
            view.c.task_id,
            view.c.status,
            view.c.device,
            view.c.created_at_utc,
            view.c.credits_used,
            view.c.duration_s,
            view.c.events,
            view.c.output_text,
            tasks.c.output,
            tasks.c.output_raw,
        )
        .select_from(view.join(tasks, tasks.c.id == view.c.task_id))
        .where(view.c.credits_used.is_not(None))
        .order_by(view.c.credits_used.desc(), view.c.task_id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(view.c.status == status)
    return conn.execute(_in_range(query, view.c.day, since, until)).all()
