"""Alembic environment: runs migrations on the connection the archiver hands over, or on
ARCHIVER_DATABASE_URL (default: the SQLite file in ARCHIVER_HOME) when run as
`alembic upgrade head` from the repository root."""

from __future__ import annotations

from alembic import context

from archiver.config import default_database_url
from archiver.store.engines import create_db_engine
from archiver.store.schema import metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_db_engine(default_database_url())
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run against a database.")
run_migrations()
