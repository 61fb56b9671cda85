"""Covering indexes for `archiver status` and `archiver report credits` at scale.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29

Both commands aggregate over every task. Reading a narrow index instead of the wide
``tasks`` rows (payload and output JSON, scattered through a file mostly made of events)
keeps them well under a second at 100,000 tasks, cold cache included:

* ``ix_tasks_status_summary`` answers status's counts (by status, active, in back-off,
  gone, events stored) in one index-only scan;
* ``ix_tasks_credits`` holds every column the ``credits_by_day`` view reads.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_tasks_status_summary": ["status", "finalized_at", "next_poll_at", "gone_at", "event_count"],
    "ix_tasks_credits": ["created_at_utc", "status", "device", "credits_used"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "tasks", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="tasks")
