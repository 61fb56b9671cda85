"""The analyst views (migration 0003) on SQLite and PostgreSQL, against hand-computed
values from the seeded rows."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text

from archiver.store.database import Database
from archiver.store.migrations import current_revision, head_revision, upgrade
from tests.seed import (
    LONG_TEXT,
    aware,
    cents,
    duration_s,
    event_rows,
    expected_by_day,
    seed_archive,
    task_rows,
)

VIEWS = {"credits_by_day", "task_summary", "event_counts"}
ANALYSTS = Path(__file__).resolve().parents[1] / "docs" / "analysts.md"


def fetch(db: Database, sql: str) -> list[dict[str, Any]]:
    with db.transaction() as conn:
        return [dict(row._mapping) for row in conn.execute(text(sql))]


def as_day(value: Any) -> date | None:
    """``day`` is a DATE on PostgreSQL and the text YYYY-MM-DD on SQLite."""
    if value is None or isinstance(value, date):
        return value
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", value), value
    return date.fromisoformat(value)


def test_views_exist_at_head_and_downgrade_drops_them(database: Database) -> None:
    """Upgrading creates the three views; downgrading to 0002 drops them, tables stay."""
    from alembic import command

    from archiver.store.migrations import alembic_config

    assert set(inspect(database.engine).get_view_names()) >= VIEWS
    with database.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0002")
    assert current_revision(database.engine) == "0002"
    inspector = inspect(database.engine)
    assert not VIEWS & set(inspector.get_view_names())
    assert {"tasks", "task_events", "artifacts"} <= set(inspector.get_table_names())
    upgrade(database.engine)
    assert current_revision(database.engine) == head_revision()
    assert set(inspect(database.engine).get_view_names()) >= VIEWS


def test_credits_by_day_matches_hand_computed_totals(database: Database, make_simulator) -> None:
    """One row per (UTC day, status, device) with task count, credit sum and dollars."""
    seed_archive(database, make_simulator)
    rows = task_rows(database)
    expected = expected_by_day(rows)
    got = {}
    for row in fetch(database, "SELECT * FROM credits_by_day"):
        key = (as_day(row["day"]), row["status"], row["device"])
        assert key not in got, f"duplicate row {key}"
        got[key] = (row["tasks"], row["credits_used"])
        assert cents(row["usd"]) == Decimal(row["credits_used"]) / 100
    assert got == expected
    assert sum(c for _, c in got.values()) == sum(r.credits_used or 0 for r in rows)
    # The millisecond created_at and the 23:59:59 task land on their own UTC days.
    assert (date(2025, 12, 5), "failed", None) in got
    assert got[(date(2025, 12, 5), "running", "mobile")] == (1, 77)
    assert got[(None, None, None)] == (1, 0)  # the task known only by id


PG_TYPES = {"timestamptz": "timestamp with time zone", "numeric(20,2)": "numeric"}


def documented_types(view: str) -> dict[str, tuple[str, str]]:
    """column -> (PostgreSQL type, SQLite type) from the view's table in docs/analysts.md."""
    section = ANALYSTS.read_text().split(f"### `{view}`", 1)[1].split("\n### ", 1)[0]
    types = {}
    for name, kind in re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.M):
        pg, _, lite = kind.strip().partition(" / ")
        types[name] = (PG_TYPES.get(pg, pg), (lite or pg).split()[0])
    return types


def test_view_column_types_are_the_documented_ones(database: Database, make_simulator) -> None:
    """PostgreSQL reports the documented types (date, bigint, numeric, timestamptz...);
    SQLite values have the documented storage class (text dates, integers, reals)."""
    seed_archive(database, make_simulator, tasks_n=3)
    for view in sorted(VIEWS):
        documented = documented_types(view)
        if database.dialect == "postgresql":
            actual = {
                row["column_name"]: row["data_type"]
                for row in fetch(
                    database,
                    "SELECT column_name, data_type FROM information_schema.columns "
                    f"WHERE table_name = '{view}'",
                )
            }
            assert actual == {name: pg for name, (pg, _) in documented.items()}, view
            continue
        for name, (_, lite) in documented.items():
            classes = {
                row["t"]
                for row in fetch(database, f"SELECT DISTINCT typeof({name}) AS t FROM {view}")
            }
            assert classes - {"null"} == {lite}, f"{view}.{name}: {classes}"


def test_task_summary_has_one_row_per_task_with_derived_columns(
    database: Database, make_simulator
) -> None:
    """Status, credits, dollars, event counts, duration, artifact states and text output."""
    seed_archive(database, make_simulator)
    rows = {row.id: row for row in task_rows(database)}
    events: defaultdict[str, list[Any]] = defaultdict(list)
    for task_id, _, stamp in event_rows(database):
        events[task_id].append(stamp)
    summary = {row["task_id"]: row for row in fetch(database, "SELECT * FROM task_summary")}
    assert set(summary) == set(rows)
    assert len(fetch(database, "SELECT * FROM task_summary")) == len(rows)
    for task_id, row in rows.items():
        got = summary[task_id]
        assert (got["status"], got["device"], got["credits_used"]) == (
            row.status,
            row.device,
            row.credits_used,
        )
        if row.credits_used is None:
            assert got["usd"] is None
        else:
            assert cents(got["usd"]) == Decimal(row.credits_used) / 100
        assert got["events"] == len(events[task_id])
        expected = duration_s(row, events[task_id])
        if expected is None:
            assert got["duration_s"] is None, task_id
        else:
            assert abs(got["duration_s"] - float(expected)) < 0.002, task_id
        if isinstance(row.output, str):
            assert got["output_type"] == "string"
            assert got["output_text"] == row.output[:200]
        else:
            assert got["output_text"] is None
    text_task = summary["tsk_manual_text"]
    assert text_task["output_text"] == LONG_TEXT[:200] and len(text_task["output_text"]) == 200
    assert text_task["duration_s"] == 90.25
    assert (text_task["recording_state"], text_task["downloads_state"]) == ("stored", "absent")
    assert summary["tsk_manual_object"]["output_type"] == "object"
    assert summary["tsk_manual_object"]["recording_state"] == "pending"
    assert summary["tsk_manual_object"]["downloads_state"] is None
    assert summary["tsk_manual_running"]["duration_s"] is None
    stub = summary["tsk_manual_stub"]
    assert stub["events"] == 0 and stub["output_type"] is None and stub["usd"] is None
    assert sum(1 for r in summary.values() if r["downloads_state"] == "failed") == 1
    assert aware(text_task["created_at_utc"]) == rows["tsk_manual_text"].created_at_utc
    assert all(as_day(summary[i]["day"]) == row.day for i, row in rows.items())


def test_event_counts_match_the_stored_events(database: Database, make_simulator) -> None:
    """One row per task and event name with its count and first/last UTC timestamp."""
    seed_archive(database, make_simulator)
    expected: defaultdict[tuple[str, str], list[Any]] = defaultdict(list)
    for task_id, name, stamp in event_rows(database):
        expected[(task_id, name)].append(stamp)
    got = {
        (row["task_id"], row["name"]): row for row in fetch(database, "SELECT * FROM event_counts")
    }
    assert set(got) == set(expected)
    for key, stamps in expected.items():
        row = got[key]
        assert row["events"] == len(stamps)
        known = [s for s in stamps if s is not None]
        first = aware(row["first_timestamp_utc"])
        last = aware(row["last_timestamp_utc"])
        assert (first, last) == ((min(known), max(known)) if known else (None, None))
