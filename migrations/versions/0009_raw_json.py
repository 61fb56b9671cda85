"""tasks.output_raw, tasks.payload_raw, task_events.payload_raw: JSON kept losslessly.

Each holds the JSON text of its typed column's value when that column cannot give the
value back exactly (on PostgreSQL jsonb refuses NUL and lone surrogates and normalises
some numbers); NULL otherwise, which is every row written before this migration.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

RAW_COLUMNS = (("tasks", "output_raw"), ("tasks", "payload_raw"), ("task_events", "payload_raw"))


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch copy-and-rename on SQLite, which the views forbid).
    for table, column in RAW_COLUMNS:
        op.add_column(table, sa.Column(column, sa.Text, nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 and PostgreSQL both drop a column in place.
    for table, column in reversed(RAW_COLUMNS):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
