"""Governance: erasure (tombstones), retention (pruned events and artifacts), masking at
ingest, and the audit trail of every removal.

* ``tasks.erased_at``: the task was erased (``archiver forget``, ``prune --only tasks``);
  the row is a tombstone (id, status, created_at, device, credits_used) never filled in
  again. ``tasks.events_pruned_at``: its events were removed by ``prune --only events``
  (``event_count`` and the credits stay).
* ``tasks.masked_rules`` / ``task_events.masked_rules``: the names of the masking rules
  that fired on the row (a JSON array), NULL when none did.
* ``artifacts.pruned_at``: when the blob was removed (state ``pruned``).
* ``erasures``: one row per task and removal: who, when, why, which command, what was
  removed (counts and bytes), never the content; the SHA-256 of each ``--matching`` text.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: JSONB on PostgreSQL; TEXT on SQLite, like every JSON column since migration 0005.
JSON_COLUMN = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
#: 64-bit on PostgreSQL; plain INTEGER on SQLite so the column aliases the rowid.
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch copy-and-rename on SQLite, which the views forbid).
    sqlite = op.get_bind().dialect.name == "sqlite"
    json = sa.Text if sqlite else JSON_COLUMN
    op.add_column("tasks", sa.Column("erased_at", sa.DateTime(timezone=True)))
    op.add_column("tasks", sa.Column("events_pruned_at", sa.DateTime(timezone=True)))
    op.add_column("tasks", sa.Column("masked_rules", json))
    op.add_column("task_events", sa.Column("masked_rules", json))
    op.add_column("artifacts", sa.Column("pruned_at", sa.DateTime(timezone=True)))
    op.create_table(
        "erasures",
        sa.Column("id", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Text, nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("events_removed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("artifacts_removed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("bytes_removed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("matching_sha256", json),
        sa.Column("rules", json),
        sa.Column("blobs_pending", json),
    )
    op.create_index("ix_erasures_task_id", "erasures", ["task_id"])
    op.create_index("ix_erasures_erased_at", "erasures", ["erased_at"])


def downgrade() -> None:
    op.drop_index("ix_erasures_erased_at", table_name="erasures")
    op.drop_index("ix_erasures_task_id", table_name="erasures")
    op.drop_table("erasures")
    # SQLite >= 3.35 and PostgreSQL both drop a column in place.
    op.execute("ALTER TABLE artifacts DROP COLUMN pruned_at")
    op.execute("ALTER TABLE task_events DROP COLUMN masked_rules")
    op.execute("ALTER TABLE tasks DROP COLUMN masked_rules")
    op.execute("ALTER TABLE tasks DROP COLUMN events_pruned_at")
    op.execute("ALTER TABLE tasks DROP COLUMN erased_at")
