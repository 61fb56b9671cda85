"""SQLite: JSON columns declared TEXT, so a bare JSON number is kept exactly as sent.

A column declared ``JSON`` has NUMERIC affinity in SQLite, which converts a top-level JSON
number on insert (``1.0`` -> ``1``, ``10**20 + 1`` -> ``1e20``). Only the declared type
changes (TEXT affinity); no row is rewritten and the on-disk format is the same. SQLite
cannot ALTER a column's type, and rebuilding ``tasks`` would fight the views and the
ON DELETE CASCADE from ``task_events``, so this uses SQLite's documented procedure for
schema changes that leave stored content untouched: edit the declared type in
``sqlite_master`` under ``writable_schema`` and bump ``schema_version``. PostgreSQL
(JSONB) is unaffected.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import re

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON_COLUMNS = {
    "tasks": ("output", "payload"),
    "task_events": ("payload",),
    "sync_state": ("value",),
}


def _retype(old: str, new: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        for table, columns in JSON_COLUMNS.items():
            sql = bind.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).scalar()
            for column in columns:
                pattern = rf"(\b{column}\b\s+){old}\b"
                sql, count = re.subn(pattern, rf"\g<1>{new}", sql, count=1)
                if count != 1:
                    raise RuntimeError(f"column {table}.{column} is not declared {old}: {sql}")
            bind.exec_driver_sql(
                "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
                (sql, table),
            )
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    _retype("JSON", "TEXT")


def downgrade() -> None:
    _retype("TEXT", "JSON")
