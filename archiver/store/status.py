"""What ``archiver status``, the metrics and the demo read: tasks by status, events, the
last runs, and the facts health is judged by."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, distinct, func, select

from archiver.stats import STORED_COUNTERS, SUCCESS_OUTCOMES
from archiver.store.artifacts import PRUNED
from archiver.store.locks import gone_runs
from archiver.store.schema import artifacts, erasures, sync_runs, task_events, tasks
from archiver.store.state import blob_storage_failure, unlisted_groups
from archiver.timestamps import aware


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
    rows = conn.execute(
        select(sync_runs).order_by(sync_runs.c.started_at.desc()).limit(last_runs)
    ).all()
    dead = gone_runs(conn, [row.run_id for row in rows if row.outcome == "running"])
    runs = [
        {
            "command": row.command,
            "started_at": _iso(row.started_at),
            "finished_at": _iso(row.finished_at),
            "outcome": "crashed" if row.run_id in dead else row.outcome,
            **{name: getattr(row, name) for name in STORED_COUNTERS},
            "message": crashed_message(dead[row.run_id]) if row.run_id in dead else row.message,
        }
        for row in rows
    ]
    return {
        "tasks": total,
        "unlisted": unlisted_groups(conn),
        "blob_storage_failing": blob_storage_failure(conn),
        "tasks_by_status": by_status,
        "active": active,
        "finalized": total - active,
        "in_error_backoff": in_error,
        "gone": gone,
        "events": events,
        "last_runs": runs,
    }


def crashed_message(why: str) -> str:
    """The message of a run found dead before the next run recorded it."""
    return f"the process died mid-run: {why} (the next sync or backfill records it)"


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 with its time zone; SQLite hands back naive datetimes, stored as UTC."""
    if value is None:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class HealthFacts:
    """What health is judged by (archiver.metrics.Health), as stored."""

    #: The newest successful pass (``ok`` or ``partial``) of each command that had one.
    last_success_by_command: dict[str, datetime | None]
    active_tasks: int
    #: The active task whose last poll (or discovery, if never polled) is oldest.
    lagging_task_id: str | None
    oldest_polled_at: datetime | None
    tasks_in_error_backoff: int
    tasks_waiting_on_artifacts: int
    tasks_erased: int
    artifacts_pruned: int
    blob_deletions_pending: int


def health_facts(conn: Connection) -> HealthFacts:
    by_command = {
        command: aware(finished)
        for command, finished in conn.execute(
            select(sync_runs.c.command, func.max(sync_runs.c.finished_at))
            .where(sync_runs.c.outcome.in_(SUCCESS_OUTCOMES))
            .group_by(sync_runs.c.command)
        )
    }
    polled = func.coalesce(tasks.c.last_polled_at, tasks.c.first_seen_at)
    active = tasks.c.finalized_at.is_(None)
    oldest = conn.execute(
        select(tasks.c.id, polled.label("polled")).where(active).order_by(polled, tasks.c.id)
    ).first()
    backoff = select(func.count()).where(active, tasks.c.next_poll_at.is_not(None))
    pending = artifacts.c.state == "pending"
    waiting = select(func.count(distinct(artifacts.c.task_id))).where(pending)
    return HealthFacts(
        last_success_by_command=by_command,
        active_tasks=conn.scalar(select(func.count()).where(active)) or 0,
        lagging_task_id=oldest.id if oldest is not None else None,
        oldest_polled_at=aware(oldest.polled) if oldest is not None else None,
        tasks_in_error_backoff=conn.scalar(backoff) or 0,
        tasks_waiting_on_artifacts=conn.scalar(waiting) or 0,
        **removed_counts(conn),
    )


def removed_counts(conn: Connection) -> dict[str, int]:
    """Tombstones, pruned artifacts and blob deletions not yet confirmed."""
    pending = select(erasures.c.blobs_pending).where(erasures.c.blobs_pending.is_not(None))
    return {
        "tasks_erased": conn.scalar(select(func.count()).where(tasks.c.erased_at.is_not(None)))
        or 0,
        "artifacts_pruned": conn.scalar(select(func.count()).where(artifacts.c.state == PRUNED))
        or 0,
        "blob_deletions_pending": sum(len(urls or ()) for urls in conn.scalars(pending)),
    }


def task_overview(conn: Connection) -> tuple[Sequence[Any], int]:
    """Every task, newest first (id, status, device, creation time, credits, events,
    finalized, error count, artifact states), and the number of events stored: the demo's
    table."""
    rec, dl = artifacts.alias("rec"), artifacts.alias("dl")
    rows = conn.execute(
        select(
            tasks.c.id,
            tasks.c.status,
            tasks.c.device,
            tasks.c.created_at_utc,
            tasks.c.credits_used,
            tasks.c.event_count,
            tasks.c.finalized_at.is_not(None).label("finalized"),
            tasks.c.error_count,
            rec.c.state.label("recording"),
            dl.c.state.label("downloads"),
        )
        .select_from(
            tasks.outerjoin(
                rec, and_(rec.c.task_id == tasks.c.id, rec.c.kind == "recording")
            ).outerjoin(dl, and_(dl.c.task_id == tasks.c.id, dl.c.kind == "downloads"))
        )
        .order_by(tasks.c.created_at.desc())
    ).all()
    return rows, conn.scalar(select(func.count()).select_from(task_events)) or 0
