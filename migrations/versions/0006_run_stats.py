"""sync_runs.artifacts_stored and sync_runs.tasks_gone: every counter of RunStats that a
run's summary line shows is kept in its sync_runs row too.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = ("artifacts_stored", "tasks_gone")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("sync_runs", sa.Column(name, sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    for name in COLUMNS:
        op.execute(f"ALTER TABLE sync_runs DROP COLUMN {name}")
