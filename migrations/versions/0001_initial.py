"""Initial schema: tasks, task_events, sync_runs, sync_state, locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the column types as they were at this revision (a migration must not
# follow later edits of archiver.store.schema).
Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("status", sa.Text),
        sa.Column("output", Json),
        sa.Column("credits_used", sa.BigInteger),
        sa.Column("device", sa.Text),
        sa.Column("live_url", sa.Text),
        sa.Column("recording_url", sa.Text),
        sa.Column("downloads_url", sa.Text),
        sa.Column("created_at", sa.BigInteger),
        sa.Column("created_at_utc", Utc),
        sa.Column("event_t", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("event_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_seen_at", Utc, nullable=False),
        sa.Column("last_polled_at", Utc),
        sa.Column("finalized_at", Utc),
        sa.Column("last_error", sa.Text),
        sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_poll_at", Utc),
        sa.Column("gone_at", Utc),
        sa.Column("full_read_at", Utc),
        sa.Column("payload", Json),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_until", Utc),
    )
    op.create_index(
        "ix_tasks_active",
        "tasks",
        ["next_poll_at"],
        sqlite_where=sa.text("finalized_at IS NULL"),
        postgresql_where=sa.text("finalized_at IS NULL"),
    )
    op.create_index("ix_tasks_created_at", "tasks", ["created_at"])
    op.create_table(
        "task_events",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column(
            "task_id", sa.Text, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("event_key", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("payload", Json),
        sa.Column("timestamp", sa.BigInteger),
        sa.Column("timestamp_utc", Utc),
        sa.Column("archived_at", Utc, nullable=False),
        sa.UniqueConstraint("task_id", "event_key", name="uq_task_events_task_key"),
    )
    op.create_table(
        "sync_runs",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, nullable=False, unique=True),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", Utc, nullable=False),
        sa.Column("finished_at", Utc),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("tasks_discovered", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tasks_polled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tasks_finalized", sa.Integer, nullable=False, server_default="0"),
        sa.Column("events_inserted", sa.Integer, nullable=False, server_default="0"),
        sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
        sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
        sa.Column("message", sa.Text),
    )
    op.create_index("ix_sync_runs_started_at", "sync_runs", ["started_at"])
    op.create_table(
        "sync_state",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("value", Json, nullable=False),
        sa.Column("updated_at", Utc, nullable=False),
    )
    op.create_table(
        "locks",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("acquired_at", Utc, nullable=False),
        sa.Column("heartbeat_at", Utc, nullable=False),
    )


def downgrade() -> None:
    for name in ("locks", "sync_state", "sync_runs", "task_events"):
        op.drop_table(name)
    op.drop_index("ix_tasks_created_at", table_name="tasks")
    op.drop_index("ix_tasks_active", table_name="tasks")
    op.drop_table("tasks")
