"""`archiver report`: the same numbers as the views and as hand computation, on both
databases, in table, CSV and JSON form."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from archiver.config import parse_day
from archiver.exceptions import ConfigError
from archiver.report import (
    bar,
    check_choice,
    check_range,
    credits_report,
    render_credits,
    render_top,
    top_tasks,
)
from archiver.store.database import Database
from tests.conftest import run_archiver
from tests.seed import cents, expected_by_day, seed_archive, task_rows


@pytest.fixture
def seeded(database: Database, make_simulator) -> Database:
    """A migrated archive on SQLite or PostgreSQL holding the seeded rows."""
    seed_archive(database, make_simulator)
    return database


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def hand_totals(db: Database, period: Any, *groups: str) -> dict[tuple[Any, ...], list[int]]:
    """(period start, *group values) -> [tasks, credits], straight from the tasks table."""
    totals: defaultdict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for row in task_rows(db):
        key = (period(row.day) if row.day else None, *(getattr(row, g) for g in groups))
        totals[key][0] += 1
        totals[key][1] += row.credits_used or 0
    return dict(totals)


def as_dict(report: Any) -> dict[tuple[Any, ...], list[int]]:
    return {(r.period, *r.groups): [r.tasks, r.credits_used] for r in report.rows}


def test_credits_by_day_equals_the_view_and_hand_totals(seeded: Database) -> None:
    """Daily rows and totals agree with SELECT ... FROM credits_by_day and with the tasks."""
    report = call(seeded, credits_report, by="day")
    assert as_dict(report) == hand_totals(seeded, lambda d: d)
    with seeded.transaction() as conn:
        view_credits, view_tasks, view_usd = conn.execute(
            text("SELECT SUM(credits_used), SUM(tasks), SUM(usd) FROM credits_by_day")
        ).one()
    rows = task_rows(seeded)
    assert report.credits_used == view_credits == sum(r.credits_used or 0 for r in rows)
    assert report.tasks == view_tasks == len(rows)
    assert report.usd == cents(view_usd) == Decimal(report.credits_used) / 100


@pytest.mark.parametrize(
    ("by", "period"),
    [("week", monday), ("month", lambda d: d.replace(day=1))],
)
def test_weeks_start_monday_and_months_add_up(seeded: Database, by: str, period: Any) -> None:
    """--by week sums Monday-to-Sunday, --by month calendar months, grouped as asked."""
    report = call(seeded, credits_report, by=by, group_by=["status", "device"])
    assert as_dict(report) == hand_totals(seeded, period, "status", "device")
    assert len({r.period for r in report.rows if r.period}) >= 2  # the seed spans them


def test_since_and_until_are_inclusive_utc_days(seeded: Database) -> None:
    """--since/--until keep tasks created on those days and drop undated ones."""
    since, until = date(2025, 11, 27), date(2025, 12, 5)
    report = call(seeded, credits_report, since=since, until=until, group_by=["status"])
    expected = {
        key: value
        for key, value in hand_totals(seeded, lambda d: d, "status").items()
        if key[0] is not None and since <= key[0] <= until
    }
    assert as_dict(report) == expected
    assert {r.period for r in report.rows} >= {since, until}
    assert call(seeded, credits_report, since=date(2030, 1, 1)).rows == []


def test_view_rows_and_report_rows_agree_per_group(seeded: Database) -> None:
    """Every (day, status, device) of the report equals that row of credits_by_day."""
    report = call(seeded, credits_report, group_by=["status", "device"])
    expected = expected_by_day(task_rows(seeded))
    assert {k: tuple(v) for k, v in as_dict(report).items()} == expected


def test_top_lists_the_most_expensive_tasks(seeded: Database) -> None:
    """top returns tasks by credits_used descending (ties by id), with dollars."""
    rows = [r for r in task_rows(seeded) if r.credits_used is not None]
    expected = sorted(rows, key=lambda r: (-(r.credits_used or 0), r.id))[:5]
    got = call(seeded, top_tasks, limit=5)
    assert [t.task_id for t in got] == [r.id for r in expected]
    assert [t.usd for t in got] == [Decimal(r.credits_used or 0) / 100 for r in expected]
    failed = call(seeded, top_tasks, limit=100, status="failed")
    assert {t.task_id for t in failed} == {r.id for r in rows if r.status == "failed"}
    ranged = call(seeded, top_tasks, limit=100, since=date(2025, 12, 6), until=date(2025, 12, 6))
    assert {t.task_id for t in ranged} == {r.id for r in rows if r.day == date(2025, 12, 6)}


def test_table_ends_with_totals_and_draws_bars(seeded: Database) -> None:
    """The table shows a bar per row, the biggest full width, and a final totals line."""
    report = call(seeded, credits_report, by="week")
    table = render_credits(report, "table", unicode=True)
    lines = [line for line in table.splitlines() if line.strip()]
    total_line = next(line for line in lines if line.startswith("total"))
    assert lines.index(total_line) == len(lines) - 2  # then only the unit note
    assert f"{report.credits_used:,}" in total_line and f"{report.usd:,.2f}" in total_line
    assert f"{report.tasks:,}" in total_line
    assert "█" * 24 in table
    ascii_table = render_credits(report, "table", unicode=False)
    assert "#" in ascii_table and "█" not in ascii_table
    top = render_top(call(seeded, top_tasks, limit=3), "table", unicode=False)
    assert top.splitlines()[-3].startswith("total")


def test_csv_and_json_carry_the_same_numbers(seeded: Database) -> None:
    """CSV rows and JSON rows/totals equal the report's rows."""
    report = call(seeded, credits_report, by="month", group_by=["device"])
    parsed = list(csv.DictReader(io.StringIO(render_credits(report, "csv"))))
    assert [
        (r["period"], r["device"], int(r["tasks"]), int(r["credits_used"]), r["usd"])
        for r in parsed
    ] == [
        (
            r.period.strftime("%Y-%m") if r.period else "",
            r.groups[0] or "",
            r.tasks,
            r.credits_used,
            f"{r.usd:.2f}",
        )
        for r in report.rows
    ]
    data = json.loads(render_credits(report, "json"))
    assert data["totals"] == {
        "tasks": report.tasks,
        "credits_used": report.credits_used,
        "usd": float(report.usd),
    }
    assert sum(row["credits_used"] for row in data["rows"]) == report.credits_used
    top = json.loads(render_top(call(seeded, top_tasks, limit=2), "json"))["tasks"]
    assert len(top) == 2 and top[0]["credits_used"] >= top[1]["credits_used"]


def test_cli_report_prints_what_the_library_computes(seeded: Database) -> None:
    """`archiver report credits --format json` and `report top --format csv` match."""
    env = {"ARCHIVER_DATABASE_URL": seeded.url}
    done = run_archiver("report", "credits", "--by", "week", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    expected = call(seeded, credits_report, by="week")
    assert json.loads(done.stdout)["totals"]["credits_used"] == expected.credits_used
    top = run_archiver("report", "top", "--limit", "3", "--format", "csv", env=env)
    assert top.returncode == 0, top.stderr
    ids = [row["task_id"] for row in csv.DictReader(io.StringIO(top.stdout))]
    assert ids == [t.task_id for t in call(seeded, top_tasks, limit=3)]


def test_bad_report_options_say_what_is_valid(seeded: Database, tmp_path: Any) -> None:
    """Wrong dates, an inverted range or unknown choices raise ConfigError (exit 2)."""
    with pytest.raises(ConfigError, match=r"--since '2026-13-01'.*YYYY-MM-DD"):
        parse_day("2026-13-01", option="--since")
    with pytest.raises(ConfigError, match="--until 2026-01-01 is before --since 2026-02-01"):
        check_range(date(2026, 2, 1), date(2026, 1, 1))
    with pytest.raises(ConfigError, match="day, week, month"):
        check_choice("year", ("day", "week", "month"), "--by")
    with pytest.raises(ConfigError, match=r"--status 'faild'.*cancelled, done, failed"):
        call(seeded, top_tasks, status="faild")
    done = run_archiver(
        "report",
        "credits",
        "--until",
        "yesterday",
        env={"ARCHIVER_DATABASE_URL": f"sqlite:///{tmp_path}/a.db"},
    )
    assert done.returncode == 2 and "--until 'yesterday' is not a date" in done.stderr


def test_bar_scales_to_the_largest_value() -> None:
    """Bars are proportional, the largest fills the width, zero draws nothing."""
    assert bar(10, 10, width=8) == "█" * 8
    assert bar(5, 10, width=8) == "█" * 4
    assert bar(0, 10) == "" and bar(3, 0) == ""
    assert bar(1, 1000, width=8) != ""  # tiny but visible
    assert bar(5, 10, width=8, unicode=False) == "####"


def call(db: Database, fn: Any, **kwargs: Any) -> Any:
    """Run one report function on its own connection."""
    with db.engine.connect() as conn:
        return fn(conn, **kwargs)


def test_top_previews_every_output_and_titles_read_naturally(seeded: Database) -> None:
    """`report top` shows a one-line preview of every output, JSON ones included; an
    empty result and a range with one end are titled in words."""
    env = {"ARCHIVER_DATABASE_URL": seeded.url}
    limit = str(len(task_rows(seeded)))
    done = run_archiver("report", "top", "--limit", limit, env=env)
    assert done.returncode == 0, done.stderr
    with_output = {
        r.id: r.output for r in task_rows(seeded) if r.output is not None and r.credits_used
    }
    assert any(not isinstance(v, str) for v in with_output.values())
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[4:-4] if line.strip()}
    for task_id, output in with_output.items():
        compact = json.dumps(output, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        preview = " ".join((output if isinstance(output, str) else compact).split())[:30]
        assert preview in lines[task_id], task_id
    empty = run_archiver("report", "top", "--since", "2027-01-01", env=env)
    assert empty.stdout.splitlines()[0] == "No tasks with credits created since 2027-01-01"
    one = run_archiver("report", "top", "--limit", "1", "--until", "2030-01-01", env=env)
    assert one.stdout.splitlines()[0] == "The most expensive task created until 2030-01-01"
    since = run_archiver("report", "credits", "--since", "2025-01-01", env=env)
    assert since.stdout.splitlines()[0].startswith("Credits by day, since 2025-01-01 (")
