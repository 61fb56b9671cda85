"""Seeded archives for the analyst-facing tests (views, report, docs, metrics).

A real sync against the simulator (tasks spread over two weeks and across a month end),
plus hand-made rows for the cases a simulator run does not produce: a task known only by
id, a running task with a millisecond ``created_at``, long non-ASCII text output, an
object output, a task in error back-off, and artifacts in every state.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select

from archiver.config import SyncOptions
from archiver.engine import SyncPass, run_command
from archiver.store.database import Database
from archiver.store.schema import artifacts, task_events, tasks
from archiver.timestamps import to_utc
from tests.conftest import client_config

TERMINAL = {"done", "failed", "cancelled"}
#: 250 characters, multi-byte ones included: the views keep the first 200 characters.
LONG_TEXT = ("Zürich → 東京 " * 30)[:250]
NOW = datetime(2025, 12, 20, tzinfo=UTC)


def seed_archive(db: Database, make_simulator: Any, *, tasks_n: int = 24) -> None:
    """Fill ``db`` with a synced simulator account plus the hand-made edge cases."""
    sim = make_simulator(tasks=tasks_n, events_per_task=4, seed=41, spacing_s=12 * 3600.0)
    sim.finish_all()
    result = run_command(SyncPass(), db, client_config(sim), SyncOptions(concurrency=4))
    assert result.exit_code == 0, result.errors
    seen = datetime(2025, 12, 10, tzinfo=UTC)
    created_ms = 1_764_950_400_123  # 2025-12-05T16:00:00.123Z, in milliseconds
    rows = [
        {"id": "tsk_manual_stub", "first_seen_at": seen},
        {
            "id": "tsk_manual_running",
            "status": "running",
            "device": "mobile",
            "credits_used": 77,
            "created_at": created_ms,
            "created_at_utc": to_utc(created_ms),
            "first_seen_at": seen,
            "last_polled_at": seen + timedelta(hours=1),
        },
        {
            "id": "tsk_manual_text",
            "status": "done",
            "device": "desktop",
            "credits_used": 1234,
            "output": LONG_TEXT,
            "created_at": 1_764_979_200,  # 2025-12-06T00:00:00Z
            "created_at_utc": to_utc(1_764_979_200),
            "first_seen_at": seen,
            "finalized_at": seen,
        },
        {
            "id": "tsk_manual_object",
            "status": "failed",
            "device": None,
            "credits_used": 0,
            "output": {"error": "captcha", "steps": [1, 2]},
            "created_at": 1_764_979_199,  # 2025-12-05T23:59:59Z, the day before
            "created_at_utc": to_utc(1_764_979_199),
            "first_seen_at": seen,
            "finalized_at": seen,
        },
        {
            "id": "tsk_manual_backoff",
            "status": "running",
            "device": "desktop-lg",
            "credits_used": 5,
            "created_at": 1_764_979_300,
            "created_at_utc": to_utc(1_764_979_300),
            "first_seen_at": seen,
            "last_polled_at": seen,
            "last_error": "HTTP 500",
            "error_count": 2,
            "next_poll_at": seen + timedelta(minutes=2),
        },
    ]
    events = [
        # tsk_manual_text ran from 00:00:00 to 00:01:30.250 (events in ms).
        ("tsk_manual_text", "e1", "browser_action", 1_764_979_205_000),
        ("tsk_manual_text", "e2", "browser_action", 1_764_979_260_500),
        ("tsk_manual_text", "e3", "tool_call", 1_764_979_290_250),
        # A task still followed has events too (and, running, no duration).
        ("tsk_manual_running", "e4", "browser_action", 1_764_950_460_000),
        ("tsk_manual_running", "e5", "session_action", 1_764_950_520_000),
    ]
    with db.transaction() as conn:
        for row in rows:  # one by one: each names only its columns (defaults apply)
            conn.execute(insert(tasks).values(row))
        conn.execute(
            insert(task_events),
            [
                {
                    "task_id": task_id,
                    "event_key": f"key-{event_id}",
                    "event_id": event_id,
                    "name": name,
                    "payload": {"n": i},
                    "timestamp": stamp,
                    "timestamp_utc": to_utc(stamp),
                    "archived_at": seen,
                }
                for i, (task_id, event_id, name, stamp) in enumerate(events)
            ],
        )
        some_sim_task = conn.scalar(
            select(tasks.c.id).where(tasks.c.id.like("tsk_%")).order_by(tasks.c.id).limit(1)
        )
        conn.execute(
            insert(artifacts),
            [
                {"task_id": "tsk_manual_text", "kind": "recording", "state": "stored"},
                {"task_id": "tsk_manual_text", "kind": "downloads", "state": "absent"},
                {
                    "task_id": "tsk_manual_object",
                    "kind": "recording",
                    "state": "pending",
                    "pending_since": seen,
                },
                {"task_id": some_sim_task, "kind": "downloads", "state": "failed"},
            ],
        )


# --- hand computations from the stored rows -------------------------------------------


def utc_day(value: datetime | str | None) -> date | None:
    """The UTC date of a stored timestamp (SQLite hands back naive UTC datetimes)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.date()


def aware(value: datetime | str | None) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (SQLite's text or naive values too)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class TaskRow:
    id: str
    status: str | None
    device: str | None
    credits_used: int | None
    created_at_utc: datetime | None
    output: Any
    day: date | None
    finalized_at: datetime | None


def task_rows(db: Database) -> list[TaskRow]:
    with db.transaction() as conn:
        rows = conn.execute(
            select(
                tasks.c.id,
                tasks.c.status,
                tasks.c.device,
                tasks.c.credits_used,
                tasks.c.created_at_utc,
                tasks.c.output,
                tasks.c.finalized_at,
            )
        ).all()
    return [
        TaskRow(
            id=r.id,
            status=r.status,
            device=r.device,
            credits_used=r.credits_used,
            created_at_utc=aware(r.created_at_utc),
            output=r.output,
            day=utc_day(r.created_at_utc),
            finalized_at=aware(r.finalized_at),
        )
        for r in rows
    ]


def event_rows(db: Database) -> list[tuple[str, str, datetime | None]]:
    with db.transaction() as conn:
        rows = conn.execute(
            select(task_events.c.task_id, task_events.c.name, task_events.c.timestamp_utc)
        ).all()
    return [(r.task_id, r.name, aware(r.timestamp_utc)) for r in rows]


def artifact_states(db: Database) -> dict[tuple[str, str], str]:
    """(task id, kind) -> state of every artifact row."""
    with db.transaction() as conn:
        rows = conn.execute(select(artifacts.c.task_id, artifacts.c.kind, artifacts.c.state))
        return {(r.task_id, r.kind): r.state for r in rows}


def duration_s(row: TaskRow, stamps: list[datetime | None]) -> Decimal | None:
    """task_summary's duration by hand: exact seconds from creation to the last
    timestamped event, for finished tasks only."""
    known = [s for s in stamps if s is not None]
    if row.status not in TERMINAL or not known or row.created_at_utc is None:
        return None
    return Decimal((max(known) - row.created_at_utc) // timedelta(microseconds=1)) / 10**6


def expected_by_day(rows: list[TaskRow]) -> dict[tuple[Any, ...], tuple[int, int]]:
    """(day, status, device) -> (tasks, credits) computed by hand from task rows."""
    counts: Counter[tuple[Any, ...]] = Counter()
    credits: defaultdict[tuple[Any, ...], int] = defaultdict(int)
    for row in rows:
        key = (row.day, row.status, row.device)
        counts[key] += 1
        credits[key] += row.credits_used or 0
    return {key: (counts[key], credits[key]) for key in counts}


def cents(value: Any) -> Decimal:
    """A dollar amount from either database (Decimal or float) as exact cents."""
    return Decimal(str(value)).quantize(Decimal("0.01"))
