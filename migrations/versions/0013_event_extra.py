"""task_events.extra, task_events.extra_raw: the fields of an event beyond the four known.

The API may add fields to any object ("unknown extra fields may appear on any object ...
keep them"). A task's are kept in tasks.payload; an event's were dropped until now, since
only its name, payload, id and timestamp had columns. ``extra`` holds the others as one
JSON object (NULL when the event had none, which is every row written before this
migration); ``extra_raw`` its exact JSON text when the typed column cannot give it back,
as the other ``*_raw`` columns do.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

#: JSONB on PostgreSQL; TEXT on SQLite, like every JSON column since migration 0005.
JSON_COLUMN = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch copy-and-rename on SQLite, which the views forbid).
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("task_events", sa.Column("extra", sa.Text if sqlite else JSON_COLUMN))
    op.add_column("task_events", sa.Column("extra_raw", sa.Text, nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 and PostgreSQL both drop a column in place.
    op.execute("ALTER TABLE task_events DROP COLUMN extra_raw")
    op.execute("ALTER TABLE task_events DROP COLUMN extra")
