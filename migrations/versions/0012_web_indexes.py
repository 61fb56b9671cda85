"""Indexes for `archiver serve`'s task list: keyset pages by creation time or by credits.

The list is ordered by ``(created_at_utc, id)`` (UTC time, so seconds and milliseconds
``created_at`` values sort together correctly) or by ``(credits_used, id)``; each page
continues after the last row of the previous one. With an index on exactly those
columns a page is one short index range scan at any archive size.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_created_at_utc_id", "tasks", ["created_at_utc", "id"])
    op.create_index("ix_tasks_credits_used_id", "tasks", ["credits_used", "id"])


def downgrade() -> None:
    op.drop_index("ix_tasks_credits_used_id", table_name="tasks")
    op.drop_index("ix_tasks_created_at_utc_id", table_name="tasks")
