"""tasks.not_found_count: a task is gone only after several 404s in a row, not one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy-and-rename on SQLite, which the views forbid).
    op.add_column(
        "tasks", sa.Column("not_found_count", sa.Integer, nullable=False, server_default="0")
    )


def downgrade() -> None:
    # SQLite >= 3.35 and PostgreSQL both drop a column in place.
    op.execute("ALTER TABLE tasks DROP COLUMN not_found_count")
