"""A terminal task is final only after a confirming read; unknown statuses back off.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

``tasks.terminal_seen_at``: when a pass first read the task terminal (a later pass's
confirming read finalizes it, so ``credits_used`` and links that settle late are kept).
``tasks.seen_active``: the archiver saw the task waiting, running or in an unknown status
(such a task is "fresh" and waits for the confirming read). ``tasks.unknown_status_polls``:
polls in a row that found a status the archiver does not know (they space out).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs: no batch copy-and-rename on SQLite, which the views forbid.
    op.add_column("tasks", sa.Column("terminal_seen_at", sa.DateTime(timezone=True)))
    op.add_column(
        "tasks", sa.Column("seen_active", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.add_column(
        "tasks",
        sa.Column("unknown_status_polls", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    for name in ("unknown_status_polls", "seen_active", "terminal_seen_at"):
        op.execute(f"ALTER TABLE tasks DROP COLUMN {name}")
