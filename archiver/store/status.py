"""What ``archiver status`` reads: tasks by status, events, the last runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from archiver.stats import STORED_COUNTERS
from archiver.store.schema import sync_runs, tasks
from archiver.store.state import unlisted_groups


def status_report(conn: Connection, *, last_runs: int = 5) -> dict[str, Any]:
    """Counts for ``archiver status``: tasks by status, active/finalized, events, runs."""
    # One scan of ix_tasks_status_summary (a covering index), not one scan of the wide
    # tasks rows per figure plus a count of every event row: under a second at 100k tasks.
    # Events stored are the sum of tasks.event_count, which each save recounts in the
    # transaction that inserts the events.
    by_status: dict[str, int] = {}
    active = in_error = gone = events = 0
    for row in conn.execute(
        select(
            tasks.c.status,
            func.count(),
            func.count() - func.count(tasks.c.finalized_at),
            func.count(tasks.c.next_poll_at),
            func.count(tasks.c.gone_at),
            func.coalesce(func.sum(tasks.c.event_count), 0),
        )
        .group_by(tasks.c.status)
        .order_by(tasks.c.status)
    ):
        key = row[0] or "(unknown)"
        by_status[key] = by_status.get(key, 0) + row[1]
        active += row[2]
        in_error += row[3]
        gone += row[4]
        events += int(row[5])
    total = sum(by_status.values())
    runs = [
        {
            "command": row.command,
            "started_at": _iso(row.started_at),
            "finished_at": _iso(row.finished_at),
            "outcome": row.outcome,
            **{name: getattr(row, name) for name in STORED_COUNTERS},
            "message": row.message,
        }
        for row in conn.execute(
            select(sync_runs).order_by(sync_runs.c.started_at.desc()).limit(last_runs)
        )
    ]
    return {
        "tasks": total,
        "unlisted": unlisted_groups(conn),
        "tasks_by_status": by_status,
        "active": active,
        "finalized": total - active,
        "in_error_backoff": in_error,
        "gone": gone,
        "events": events,
        "last_runs": runs,
    }


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 with its time zone; SQLite hands back naive datetimes, stored as UTC."""
    if value is None:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds")
