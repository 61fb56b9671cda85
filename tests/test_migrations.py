"""Migrations: they build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from archiver.db import Database, current_revision, head_revision, upgrade
from archiver.schema import metadata


def test_migrations_produce_the_declared_schema(database: Database) -> None:
    """Upgrading to head leaves no difference between the database and archiver.schema."""
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

    from archiver.db import _alembic_config

    with database.engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "base")
    assert current_revision(database.engine) is None
    upgrade(database.engine)
    assert current_revision(database.engine) == head_revision()
