"""Migrations: they build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from archiver.store.database import Database
from archiver.store.migrations import current_revision, head_revision, upgrade
from archiver.store.schema import metadata


def test_migrations_produce_the_declared_schema(database: Database) -> None:
    """Upgrading to head leaves no difference between the database and archiver.store.schema."""
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_reaches_head(database: Database) -> None:
    """A second upgrade is a no-op and the database reports the head revision."""
    upgrade(database.engine)
    assert current_revision(database.engine) == head_revision()


def test_downgrade_to_base_and_up_again(database: Database) -> None:
    """Every migration's downgrade runs, and the chain upgrades again from nothing."""
    from alembic import command

    from archiver.store.migrations import alembic_config

    with database.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert current_revision(database.engine) is None
    upgrade(database.engine)
    assert current_revision(database.engine) == head_revision()


def test_sqlite_json_columns_become_text_keeping_existing_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """0005 retypes SQLite's JSON columns to TEXT; rows written before still read back."""
    import sqlite3

    from sqlalchemy import select

    from archiver.store.schema import tasks
    from archiver.timestamps import utcnow

    path = tmp_path / "old.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db.engine, "0004")
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(
        "INSERT INTO tasks (id, output, first_seen_at) VALUES "
        "('num', '1.0', '2026-01-01 00:00:00'), ('obj', '{\"a\": 1}', '2026-01-01 00:00:00')"
    )
    # The bug being fixed: NUMERIC affinity stored the JSON text 1.0 as the integer 1.
    assert raw.execute("SELECT typeof(output) FROM tasks WHERE id = 'num'").fetchone() == (
        "integer",
    )
    upgrade(db.engine)
    with db.transaction() as conn:
        assert dict(conn.execute(select(tasks.c.id, tasks.c.output)).all()) == {
            "num": 1.0,
            "obj": {"a": 1},
        }
        conn.execute(tasks.insert().values(id="new", output=1.0, first_seen_at=utcnow()))
    assert raw.execute("SELECT output, typeof(output) FROM tasks WHERE id = 'new'").fetchone() == (
        "1.0",
        "text",
    )
    raw.close()
    db.dispose()


def _upgrade_at_barrier(url: str, start: Any) -> None:
    """One "host": connect, wait for the other, then migrate (in a process of its own)."""
    db = Database(url)
    start.wait()
    upgrade(db.engine)
    db.dispose()


def test_two_runs_migrating_one_empty_postgresql_database_together_both_succeed(
    postgres_url: str,
) -> None:
    """Two processes upgrading one empty PostgreSQL database at the same instant both
    succeed (the advisory lock makes the second wait) and the schema is at head once."""
    import multiprocessing

    from sqlalchemy import text

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    hosts = [
        context.Process(target=_upgrade_at_barrier, args=(postgres_url, start)) for _ in range(2)
    ]
    for host in hosts:
        host.start()
    for host in hosts:
        host.join(timeout=120)
    assert [host.exitcode for host in hosts] == [0, 0]
    db = Database(postgres_url)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [
            (head_revision(),)
        ]
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    db.dispose()
