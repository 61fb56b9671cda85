"""Artifacts: artifacts and artifact_files tables for archived recordings and downloads.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column(
            "task_id",
            sa.Text,
            sa.ForeignKey("tasks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("blob_url", sa.Text),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("sha256", sa.Text),
        sa.Column("content_type", sa.Text),
        sa.Column("source_url", sa.Text),
        sa.Column("fetched_at", Utc),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("pending_since", Utc),
        sa.Column("next_attempt_at", Utc),
    )
    op.create_index("ix_artifacts_state", "artifacts", ["state"])
    op.create_table(
        "artifact_files",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column(
            "task_id", sa.Text, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("compressed_bytes", sa.BigInteger),
        sa.Column("modified_at", Utc),
    )
    op.create_index("ix_artifact_files_task_id", "artifact_files", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_artifact_files_task_id", table_name="artifact_files")
    op.drop_table("artifact_files")
    op.drop_index("ix_artifacts_state", table_name="artifacts")
    op.drop_table("artifacts")
