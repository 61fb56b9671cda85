"""The docs are true: analysts' queries run on both databases, every column, flag,
environment variable and exit code is documented, the SQLite-to-PostgreSQL recipe works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import click
import pytest
from sqlalchemy import func, select

from archiver import config
from archiver.cli import cli
from archiver.store.database import Database
from archiver.store.schema import metadata, sync_runs, task_events, tasks
from tests.seed import (
    TERMINAL,
    TaskRow,
    artifact_states,
    aware,
    cents,
    duration_s,
    event_rows,
    expected_by_day,
    seed_archive,
    task_rows,
)

ROOT = Path(__file__).resolve().parents[1]
ANALYSTS = ROOT / "docs" / "analysts.md"
OPERATIONS = ROOT / "docs" / "operations.md"
README = ROOT / "README.md"
VIEWS = ("credits_by_day", "task_summary", "event_counts")
EXIT_CODES = ("0", "1", "2", "3", "75", "130", "143")


def fenced(path: Path, language: str) -> list[str]:
    """The contents of the ```language blocks of a Markdown file, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", path.read_text(), flags=re.M | re.S)


def run_raw(db: Database, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run SQL exactly as written through the driver (no SQLAlchemy parameter parsing)."""
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(sql)
        names = [d[0] for d in cursor.description]
        rows = [tuple(r) for r in cursor.fetchall()]
        cursor.close()
        raw.rollback()
        return names, rows
    finally:
        raw.close()


# --- the ten example queries, computed by hand from the base tables ------------------

Row = tuple[Any, ...]
MONEY_NOISE = Decimal("1e-9")


@dataclass(frozen=True)
class Seeded:
    """The seeded archive's base rows, read with plain SELECTs (never through a view)."""

    tasks: list[TaskRow]
    events: dict[str, list[tuple[str, datetime | None]]]  # task id -> [(name, timestamp)]
    artifacts: dict[tuple[str, str], str]  # (task id, kind) -> state

    @classmethod
    def read(cls, db: Database) -> Seeded:
        events: defaultdict[str, list[tuple[str, datetime | None]]] = defaultdict(list)
        for task_id, name, stamp in event_rows(db):
            events[task_id].append((name, stamp))
        return cls(task_rows(db), dict(events), artifact_states(db))

    def duration(self, row: TaskRow) -> Decimal | None:
        """duration_s as task_summary rounds it (to the millisecond)."""
        exact = duration_s(row, [stamp for _, stamp in self.events.get(row.id, [])])
        return None if exact is None else exact.quantize(Decimal("0.001"), ROUND_HALF_UP)


@dataclass(frozen=True)
class Expected:
    columns: tuple[str, ...]
    rows: list[Row]
    #: The query's ORDER BY as a sort key; rows with equal keys may come in any order.
    order: Callable[[Row], Any]


def usd(credits: int) -> Decimal:
    return Decimal(credits) / 100


def sql_sum(values: list[int | None]) -> int | None:
    """SUM: the total of the non-NULL values, NULL when there are none."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def average(values: list[Decimal | int | None], places: str) -> Decimal | None:
    """AVG over the non-NULL values, rounded half away from zero like ROUND(numeric, n)."""
    known = [Decimal(v) for v in values if v is not None]
    if not known:
        return None
    return (sum(known, Decimal(0)) / len(known)).quantize(Decimal(places), ROUND_HALF_UP)


def regroup(
    by_day: dict[tuple[Any, ...], tuple[int, int]], key: Callable[[tuple[Any, ...]], Any]
) -> dict[Any, tuple[int, int]]:
    """expected_by_day's (day, status, device) rows summed into coarser groups."""
    totals: defaultdict[Any, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for group, (count, credits) in by_day.items():
        done = totals[key(group)]
        totals[key(group)] = (done[0] + count, done[1] + credits)
    return dict(totals)


def days_in(sql: str) -> list[date]:
    """The date literals of a query, in order (its period, as the reader edits it)."""
    return [date.fromisoformat(d) for d in re.findall(r"'(\d{4}-\d{2}-\d{2})'", sql)]


def spend_per_day(s: Seeded, sql: str) -> Expected:
    (since,) = days_in(sql)
    assert any(r.day and r.day < since for r in s.tasks), "the seed must test the date filter"
    totals = regroup(expected_by_day(s.tasks), lambda g: g[0])
    rows = [
        (day.isoformat(), n, credits, usd(credits))
        for day, (n, credits) in totals.items()
        if day is not None and day >= since
    ]
    return Expected(("day", "tasks", "credits", "usd"), rows, lambda r: r[0])


def spend_per_month_and_status(s: Seeded, sql: str) -> Expected:
    dated = {k: v for k, v in expected_by_day(s.tasks).items() if k[0] is not None}
    totals = regroup(dated, lambda g: (g[0].isoformat()[:7], g[1]))
    rows = [(month, status, n, c, usd(c)) for (month, status), (n, c) in totals.items()]
    return Expected(("month", "status", "tasks", "credits", "usd"), rows, lambda r: (r[0], -r[3]))


def spend_per_device(s: Seeded, sql: str) -> Expected:
    totals = regroup(expected_by_day(s.tasks), lambda g: g[2])
    rows = [(device, n, c, usd(c)) for device, (n, c) in totals.items()]
    return Expected(("device", "tasks", "credits", "usd"), rows, lambda r: -r[2])


def most_expensive_tasks(s: Seeded, sql: str) -> Expected:
    priced = [(r, c) for r in s.tasks if (c := r.credits_used) is not None]
    assert 10 < len(priced) < len(s.tasks), "the LIMIT and the filter must both bite"

    def order(r: Row) -> tuple[Any, ...]:  # ORDER BY credits_used DESC, task_id
        return (-r[3], r[0])

    rows: list[Row] = [
        (
            r.id,
            r.status,
            r.device,
            credits,
            usd(credits),
            s.duration(r),
            r.output[:200] if isinstance(r.output, str) else None,
        )
        for r, credits in priced
    ]
    columns = ("task_id", "status", "device", "credits_used", "usd", "duration_s", "output_text")
    return Expected(columns, sorted(rows, key=order)[:10], order)


def failed_in_period(s: Seeded, sql: str) -> Expected:
    first, last = days_in(sql)
    failed = [r for r in s.tasks if r.status == "failed"]
    inside = [r for r in failed if r.day and first <= r.day <= last]
    assert inside and len(inside) < len(failed), "the seed must test the period"
    credits = sum(r.credits_used or 0 for r in inside)
    rows = [(len(inside), credits, usd(credits))]
    return Expected(("failed_tasks", "credits", "usd"), rows, lambda r: 0)


def averages_by_status(s: Seeded, sql: str) -> Expected:
    groups: defaultdict[str | None, list[TaskRow]] = defaultdict(list)
    for r in s.tasks:
        groups[r.status].append(r)
    rows = [
        (
            status,
            len(members),
            average([r.credits_used for r in members], "0.1"),
            average([s.duration(r) for r in members], "0.1"),
        )
        for status, members in groups.items()
    ]
    return Expected(("status", "tasks", "avg_credits", "avg_seconds"), rows, lambda r: -r[1])


def event_kinds(s: Seeded, sql: str) -> Expected:
    counts: Counter[str] = Counter()
    holders: defaultdict[str, set[str]] = defaultdict(set)
    for task_id, events in s.events.items():
        for name, _ in events:
            counts[name] += 1
            holders[name].add(task_id)
    rows = [(name, n, len(holders[name])) for name, n in counts.items()]
    return Expected(("name", "events", "tasks"), rows, lambda r: -r[1])


def still_followed(s: Seeded, sql: str) -> Expected:
    open_ = [r for r in s.tasks if r.finalized_at is None]
    assert any(s.events.get(r.id) for r in open_), "an open task must have events"
    rows = [
        (
            r.id,
            r.status,
            r.credits_used,
            None if r.created_at_utc is None else r.created_at_utc.isoformat(),
            len(s.events.get(r.id, [])),
        )
        for r in open_
    ]
    columns = ("task_id", "status", "credits_used", "created_at_utc", "events")
    return Expected(columns, rows, lambda r: (r[3] is None, r[3] or "", r[0]))


def failure_reasons(s: Seeded, sql: str) -> Expected:
    rows = [
        (r.id, r.credits_used, r.output["error"])
        for r in s.tasks
        if r.status == "failed" and isinstance(r.output, dict) and r.output.get("error") is not None
    ]
    return Expected(("id", "credits_used", "error"), rows, lambda r: (-r[1], r[0]))


def recording_completeness(s: Seeded, sql: str) -> Expected:
    groups: defaultdict[str | None, list[TaskRow]] = defaultdict(list)
    for r in s.tasks:
        if r.status in TERMINAL:
            groups[s.artifacts.get((r.id, "recording"))].append(r)
    rows = [
        (
            state,
            len(members),
            sql_sum([r.credits_used for r in members]),
        )
        for state, members in groups.items()
    ]
    return Expected(("recording_state", "tasks", "credits"), rows, lambda r: -r[1])


#: What each of the ten queries must return, in the order docs/analysts.md lists them.
HAND_COMPUTED: list[Callable[[Seeded, str], Expected]] = [
    spend_per_day,
    spend_per_month_and_status,
    spend_per_device,
    most_expensive_tasks,
    failed_in_period,
    averages_by_status,
    event_kinds,
    still_followed,
    failure_reasons,
    recording_completeness,
]


def plain(column: str, value: Any) -> Any:
    """One comparable form for a value from either database: ISO dates and UTC times,
    exact Decimal numbers, money in cents (ignoring float noise far below a cent)."""
    if value is None:
        return None
    if column.endswith("_utc"):
        stamp = aware(value)
        assert stamp is not None
        return stamp.isoformat()
    if isinstance(value, str):
        return value
    if isinstance(value, date):
        return value.isoformat()
    number = Decimal(str(value))
    if column == "usd" and abs(number - cents(number)) < MONEY_NOISE:
        return cents(number)
    return number


def mismatches(db: Database, number: int, sql: str, seeded: Seeded) -> list[str]:
    """How the query's result differs from the hand-computed one (empty if it does not)."""
    expected = HAND_COMPUTED[number - 1](seeded, sql)
    assert expected.rows, f"query {number}: the seed gives it nothing to return"
    names, raw = run_raw(db, sql)
    got = [tuple(plain(n, v) for n, v in zip(names, row, strict=True)) for row in raw]
    problems = []
    if tuple(names) != expected.columns:
        problems.append(f"columns {names} != {list(expected.columns)}")
    if Counter(got) != Counter(expected.rows):
        problems.append(f"rows {sorted(got, key=repr)} != {sorted(expected.rows, key=repr)}")
    elif [expected.order(r) for r in got] != sorted(expected.order(r) for r in expected.rows):
        problems.append(f"order {got}")
    return [f"query {number} on {db.dialect}: {p}" for p in problems]


def test_analysts_ten_example_queries_return_hand_computed_results(
    database: Database, make_simulator
) -> None:
    """Each ```sql query of docs/analysts.md returns exactly the rows computed by hand."""
    queries = fenced(ANALYSTS, "sql")
    assert len(queries) == len(HAND_COMPUTED) == 10
    seed_archive(database, make_simulator)
    seeded = Seeded.read(database)
    problems = [p for n, sql in enumerate(queries, 1) for p in mismatches(database, n, sql, seeded)]
    assert not problems, "\n".join(problems)


def test_analysts_doc_documents_every_column_of_views_and_tables(tmp_path: Path) -> None:
    """Every view column (as the database reports it) and every table column is named in
    docs/analysts.md, each view's columns inside its own section."""
    text = ANALYSTS.read_text()
    db = Database(f"sqlite:///{tmp_path}/a.db")
    db.prepare()
    for view in VIEWS:
        names, _ = run_raw(db, f"SELECT * FROM {view} LIMIT 0")
        section = text.split(f"### `{view}`", 1)[1].split("\n### ", 1)[0]
        missing = [n for n in names if f"`{n}`" not in section]
        assert not missing, f"{view}: undocumented columns {missing}"
    internal = {"sync_state", "locks"}
    for table in metadata.sorted_tables:
        if table.name in internal:
            assert f"`{table.name}`" in text
            continue
        section = text.split(f"### `{table.name}`", 1)[1].split("\n### ", 1)[0]
        missing = [c.name for c in table.columns if f"`{c.name}`" not in section]
        assert not missing, f"{table.name}: undocumented columns {missing}"
    db.dispose()


def _commands(group: click.Group, prefix: str = "archiver") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
        else:
            found.append((f"{prefix} {name}", command))
    return found


def test_operations_doc_covers_every_flag_env_var_and_exit_code() -> None:
    """docs/operations.md names every command, long flag and environment variable of the
    CLI; it and the README list every exit code, including status's 3."""
    text = OPERATIONS.read_text()
    for path, command in _commands(cli):
        assert f"`{path}" in text, f"{path} is not documented"
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            for flag in [*param.opts, *param.secondary_opts]:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in text, f"{path} {flag} is not documented"
            envvars = param.envvar if isinstance(param.envvar, list) else [param.envvar]
            for envvar in filter(None, envvars):
                assert f"`{envvar}`" in text, f"{envvar} is not documented"
    for name in dir(config):
        if name.startswith("ENV_"):
            assert f"`{getattr(config, name)}`" in text, f"{name} is not documented"
    for doc in (text, README.read_text()):
        table = doc.split("Exit codes", 1)[1]
        codes = set(re.findall(r"^\| (\d+(?: / \d+)?) \|", table, flags=re.M))
        flat = {c for entry in codes for c in entry.split(" / ")}
        assert set(EXIT_CODES) <= flat, f"exit codes missing: {set(EXIT_CODES) - flat}"


def test_every_database_url_help_gives_a_sqlite_and_a_postgresql_example() -> None:
    """Each command's --database-url help shows one SQLite and one PostgreSQL URL, and
    docs/operations.md gives the same two."""
    text = OPERATIONS.read_text()
    helps = [
        (path, param.help or "")
        for path, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option) and "--database-url" in param.opts
    ]
    assert len(helps) >= 9  # sync, backfill, status, report x2, db x2, verify, serve
    for path, help_text in helps:
        examples = re.findall(r"(?:sqlite|postgresql)://\S+[^\s.,)]", help_text)
        assert [e.split(":", 1)[0] for e in examples] == ["sqlite", "postgresql"], path
        for example in examples:
            assert f"`{example}`" in text, f"{path}: {example} is not in operations.md"


def test_sqlite_to_postgres_recipe_copies_everything(
    tmp_path: Path, postgres_url: str, make_simulator
) -> None:
    """The copy script in docs/operations.md moves a seeded SQLite archive to PostgreSQL
    with the same rows, and sync then keeps working there."""
    (script,) = [b for b in fenced(OPERATIONS, "python") if "copy_to_postgres" in b]
    source = Database(f"sqlite:///{tmp_path}/src.db")
    source.prepare()
    seed_archive(source, make_simulator, tasks_n=6)
    path = tmp_path / "copy_to_postgres.py"
    path.write_text(script)
    env = {
        **os.environ,
        "SOURCE_URL": source.url,
        "TARGET_URL": postgres_url,
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    target = Database(postgres_url)

    def counts(db: Database) -> list[int]:
        with db.transaction() as conn:
            return [
                conn.scalar(select(func.count()).select_from(t)) or 0
                for t in (tasks, task_events, sync_runs)
            ]

    assert counts(target) == counts(source)
    _, src_rows = run_raw(source, "SELECT day, credits_used FROM credits_by_day")
    _, dst_rows = run_raw(target, "SELECT CAST(day AS TEXT), credits_used FROM credits_by_day")
    assert sorted(src_rows, key=repr) == sorted(dst_rows, key=repr)
    # New rows get fresh ids: the sequences were moved past the copied ones.
    seed_more = make_simulator(tasks=3, seed=99, start=1_800_000_000)
    seed_more.finish_all()
    from archiver.config import SyncOptions
    from archiver.engine import SyncPass, run_command
    from tests.conftest import client_config

    result = run_command(SyncPass(), target, client_config(seed_more), SyncOptions())
    assert result.exit_code == 0, result.errors
    source.dispose()
    target.dispose()


@pytest.mark.parametrize("doc", [ANALYSTS, OPERATIONS])
def test_readme_links_the_docs(doc: Path) -> None:
    """The README points analysts and operators to their page."""
    assert f"docs/{doc.name}" in README.read_text()


# --- every flag's default, written the same in --help and in docs/operations.md --------


def _cells(row: str) -> list[str]:
    """The cells of a Markdown table row (``\\|`` inside a cell is not a border)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def _flag_tables(section: str) -> dict[str, str]:
    """flag -> its default cell, from the tables of ``section`` whose second column is
    "default"."""
    found: dict[str, str] = {}
    for table_text in re.findall(r"((?:^\|.*\n)+)", section, flags=re.M):
        rows = table_text.strip().splitlines()
        if len(rows) < 3 or _cells(rows[0])[:2] != ["flag", "default"]:
            continue
        for row in rows[2:]:
            cells = _cells(row)
            for flag in re.findall(r"`(--[a-z][a-z-]*)", cells[0]):
                found.setdefault(flag, cells[1])
    return found


def documented_defaults(path: str) -> dict[str, str]:
    """flag -> default as docs/operations.md writes it for command ``path`` (backfill's
    shared flags from sync's table; "see above" from the environment variables' table)."""
    text = OPERATIONS.read_text()
    sections = {s.split("\n", 1)[0]: s for s in text.split("\n### ")[1:]}
    env_table = _cells_by_flag(sections["Environment variables"])
    mine: dict[str, str] = {}
    for own in (path, "archiver sync" if path == "archiver backfill" else path):
        for heading, section in sections.items():
            if f"`{own}`" in heading:
                for flag, default in _flag_tables(section).items():
                    mine.setdefault(flag, default)
    return {
        flag: env_table.get(flag, default) if default == "see above" else default
        for flag, default in mine.items()
    }


def _cells_by_flag(section: str) -> dict[str, str]:
    """flag -> default in the environment variables' table (variable | flag | default)."""
    found = {}
    for row in section.splitlines():
        if row.startswith("| `"):
            cells = _cells(row)
            for flag in re.findall(r"`(--[a-z][a-z-]*)", cells[1]):
                found[flag] = cells[2]
    return found


def plain_default(text: str) -> str:
    """A default as written, without Markdown code marks or click's parentheses."""
    return text.replace("`", "").strip().removeprefix("(").removesuffix(")")


def help_default(command: click.Command, param: click.Option, path: str) -> str | None:
    """The default `--help` writes for ``param`` (its ``[default: ...]``), or None."""
    ctx = click.Context(command, info_name=path)
    record = param.get_help_record(ctx)
    assert record is not None
    found = re.search(r"\[default: (.*?)(?:; [^;\]]*)?\]", " ".join(record[1].split()))
    return None if found is None else plain_default(found.group(1))


def test_every_flag_default_is_written_the_same_in_help_and_docs() -> None:
    """Each flag with a default shows it in --help, and docs/operations.md writes that
    same default in the command's flag table (e.g. `1h`, never `60min` in one place)."""
    problems = []
    for path, command in _commands(cli):
        documented = documented_defaults(path)
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
            if not (param.help or "").strip():
                problems.append(f"{path} {flag}: no help text")
            shown = help_default(command, param, path)
            default = param.get_default(click.Context(command), call=False)
            # click 8.3 marks "no default" with its own sentinel (UNSET).
            unset = default is getattr(click.core, "UNSET", None)
            valued = not unset and default not in (None, False, (), []) and not param.count
            if shown is None:
                if valued:
                    problems.append(f"{path} {flag}: --help does not show its default")
                continue
            written = documented.get(flag)
            if written is None:
                problems.append(f"{path} {flag}: no default in docs/operations.md")
            elif plain_default(written) != shown:
                problems.append(f"{path} {flag}: --help says {shown!r}, the docs {written!r}")
    assert not problems, "\n".join(problems)
