"""Lock holders name their boot and pid namespace; the lease heartbeat gets an index.

``locks.boot_id`` and ``locks.pid_namespace``: a holder's pid is judged dead only by a run
on the same host, boot and pid namespace (containers sharing a hostname see other
processes behind the same pid). Rows written before stay NULL and fall back to the stale
heartbeat rule. ``ix_tasks_lease_owner`` (partial: leased rows only) turns the heartbeat's
``UPDATE tasks ... WHERE lease_owner = :owner`` from a table scan into an index lookup.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = ("boot_id", "pid_namespace")
LEASE_INDEX = "ix_tasks_lease_owner"


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy-and-rename on SQLite, which the views forbid).
    for name in COLUMNS:
        op.add_column("locks", sa.Column(name, sa.Text))
    where = sa.text("lease_owner IS NOT NULL")
    op.create_index(
        LEASE_INDEX, "tasks", ["lease_owner"], sqlite_where=where, postgresql_where=where
    )


def downgrade() -> None:
    op.drop_index(LEASE_INDEX, table_name="tasks")
    for name in COLUMNS:
        op.execute(f"ALTER TABLE locks DROP COLUMN {name}")
