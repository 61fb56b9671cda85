"""sync_runs.skipped_leased: tasks a pass skipped because another live run held their
lease, so that skipped work is never recorded as a silent success.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "sync_runs", sa.Column("skipped_leased", sa.Integer, nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.execute("ALTER TABLE sync_runs DROP COLUMN skipped_leased")
