"""Every API column is declared once (archiver.store.columns) and every statement that
writes a task or an event row is built from that declaration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Column, MetaData, Text, select, text

from archiver.config import SyncOptions
from archiver.engine import BackfillPass, SyncPass, run_command
from archiver.store import columns
from archiver.store.columns import EVENT_COLUMNS, TASK_COLUMNS, Kind, TaskColumns, TaskField
from archiver.store.database import Database
from archiver.store.schema import task_events, tasks
from tests.conftest import client_config

#: Columns of ``tasks`` the archiver keeps for itself (not from the API's payload).
BOOKKEEPING = {
    "id",
    "event_t",
    "event_count",
    "first_seen_at",
    "last_polled_at",
    "finalized_at",
    "last_error",
    "error_count",
    "next_poll_at",
    "gone_at",
    "not_found_count",
    "full_read_at",
    "lease_owner",
    "lease_until",
    "terminal_seen_at",
    "seen_active",
    "unknown_status_polls",
    "erased_at",
    "events_pruned_at",
}


def test_every_column_of_tasks_is_declared_as_an_api_field_or_bookkeeping() -> None:
    """A new column of tasks must be declared: from the API (TASK_FIELDS) or the archiver's."""
    declared = set(TASK_COLUMNS.names)
    assert declared & BOOKKEEPING == set()
    assert {column.name for column in tasks.columns} == declared | BOOKKEEPING


def test_the_event_columns_are_exactly_the_columns_of_task_events_but_the_surrogate_id() -> None:
    """The hot insert names every column of task_events, in one declared order."""
    names = [c.name for c in EVENT_COLUMNS]
    assert len(set(names)) == len(names)
    assert set(names) == {c.name for c in task_events.columns} - {"id"}


def test_every_event_statement_names_every_declared_column() -> None:
    """The SQLite insert, the PostgreSQL insert, COPY table and move all name each column."""
    statements = [
        columns.sqlite_insert_events(),
        columns.pg_insert_events(),
        columns.pg_staging_table("staging"),
        columns.pg_move_staged_events("staging"),
    ]
    for statement in statements:
        for column in EVENT_COLUMNS:
            assert column.quoted in statement, (column.name, statement)
    # A re-read overwrites exactly the "latest" columns, and only when a compared one changed.
    clause = columns.events_conflict_clause("sqlite")
    assert clause.count("= excluded.") == sum(c.latest for c in EVENT_COLUMNS)
    assert clause.count("IS NOT excluded.") == sum(c.compared for c in EVENT_COLUMNS)


def _shadow(task) -> str:  # type: ignore[no-untyped-def]
    """The fake column's value: changes when the status does (running -> done)."""
    return f"{task.status}/{task.device}"


@pytest.fixture
def shadow_column(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fake API column ``shadow`` added to the declaration only: a copy of the tasks table
    with the column, and the field; the statements are built from them."""
    table = tasks.to_metadata(MetaData())
    table.append_column(Column("shadow", Text))
    fields = (*TASK_COLUMNS.fields, TaskField("shadow", Kind.TEXT, _shadow))
    monkeypatch.setattr(columns, "TASK_COLUMNS", TaskColumns(table, fields))
    yield


def _add_shadow(db: Database) -> None:
    with db.transaction() as conn:
        conn.execute(text("ALTER TABLE tasks ADD COLUMN shadow TEXT"))


def _shadows(db: Database) -> dict[str, tuple[str | None, str | None, str | None]]:
    with db.reading() as conn:
        rows = conn.execute(
            select(tasks.c.id, tasks.c.status, tasks.c.device, text("shadow")).select_from(tasks)
        )
        return {row[0]: (row[1], row[2], row[3]) for row in rows}


def test_a_fake_column_is_written_by_the_listing_a_poll_and_a_backfill(
    shadow_column: None, database_url: str, make_simulator, tmp_path
) -> None:
    """Declared once, the new column is filled by discovery's listing (a task whose Get Task
    fails keeps the listed value), rewritten by every poll (running -> done), and by a
    backfill into a fresh archive."""
    db = Database(database_url)
    db.prepare()
    _add_shadow(db)
    # Six tasks created a second apart and running (each runs 30 s or more).
    shape = {"tasks": 6, "events_per_task": 4, "seed": 11, "spacing_s": 1.0}
    bad = next(iter(make_simulator(**shape).truth()))
    sim = make_simulator(**shape, malformed_task_ids=frozenset({bad}))
    first = run_command(SyncPass(), db, client_config(sim), SyncOptions())
    assert first.errors  # bad's Get Task is malformed: only the listing wrote its row
    listed = _shadows(db)
    assert listed, "the listing found tasks"
    assert listed[bad][0] == "running" and listed[bad][2] == f"running/{listed[bad][1]}"
    assert all(shadow == f"{status}/{device}" for status, device, shadow in listed.values())
    sim.finish_all()
    run_command(SyncPass(), db, client_config(sim), SyncOptions())
    polled = {k: v for k, v in _shadows(db).items() if k != bad}
    assert any(status == "done" for status, _, _ in polled.values())
    assert all(shadow == f"{status}/{device}" for status, device, shadow in polled.values())
    assert any(listed[k][2] != polled[k][2] for k in polled if k in listed)  # rewritten
    db.dispose()

    fresh = Database(f"sqlite:///{tmp_path / 'backfill.db'}")
    fresh.prepare()
    _add_shadow(fresh)
    run_command(BackfillPass(), fresh, client_config(sim), SyncOptions())
    filled = _shadows(fresh)
    assert len(filled) == 6
    good = {k: v for k, v in filled.items() if k != bad}
    assert all(shadow == f"{status}/{device}" for status, device, shadow in good.values())
    fresh.dispose()
