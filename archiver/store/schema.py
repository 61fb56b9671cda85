"""The archive's tables, as SQLAlchemy Core metadata.

Table and column names are a public interface: analysts write SQL against them. They
change only through a migration in ``migrations/versions`` and the docs; a test checks
that the migrations produce exactly this metadata.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from archiver.jsonvalues import loads_json, storage_json

metadata = MetaData()


class SqliteJsonText(TypeDecorator[Any]):
    """JSON stored in a TEXT column on SQLite.

    A column declared ``JSON`` gets NUMERIC affinity in SQLite, which turns a bare JSON
    number into an SQL number (``1.0`` -> ``1``, ``10**20 + 1`` -> ``1e20``). TEXT affinity
    keeps every value exactly as serialized; ``json_extract`` works the same on it.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else storage_json(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        # Rows written before migration 0005 may hold a number stored as a number.
        return loads_json(value) if isinstance(value, str) else value


#: JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
Json = (
    JSON(none_as_null=True)
    .with_variant(JSONB(none_as_null=True), "postgresql")
    .with_variant(SqliteJsonText(), "sqlite")
)
#: 64-bit on PostgreSQL; plain INTEGER on SQLite so the column aliases the rowid.
AutoId = BigInteger().with_variant(Integer(), "sqlite")
UtcDateTime = DateTime(timezone=True)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Text, primary_key=True),
    Column("status", Text),
    Column("output", Json),
    Column("credits_used", BigInteger),
    Column("device", Text),
    Column("live_url", Text),
    Column("recording_url", Text),
    Column("downloads_url", Text),
    Column("created_at", BigInteger),
    Column("created_at_utc", UtcDateTime),
    Column("event_t", BigInteger, nullable=False, server_default="0"),
    Column("event_count", Integer, nullable=False, server_default="0"),
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("last_polled_at", UtcDateTime),
    Column("finalized_at", UtcDateTime),
    Column("last_error", Text),
    Column("error_count", Integer, nullable=False, server_default="0"),
    Column("next_poll_at", UtcDateTime),
    Column("gone_at", UtcDateTime),
    Column("not_found_count", Integer, nullable=False, server_default="0"),
    Column("full_read_at", UtcDateTime),
    Column("payload", Json),
    Column("lease_owner", Text),
    Column("lease_until", UtcDateTime),
    # Added by migration 0008 (a terminal task is final only after a confirming read).
    Column("terminal_seen_at", UtcDateTime),
    Column("seen_active", Boolean, nullable=False, server_default=false()),
    Column("unknown_status_polls", Integer, nullable=False, server_default="0"),
    # Added by migration 0009: the JSON text as sent where the typed column cannot give
    # it back exactly, else NULL.
    Column("output_raw", Text),
    Column("payload_raw", Text),
    # Added by migration 0014 (governance): a tombstone, pruned events, masking rules fired.
    Column("erased_at", UtcDateTime),
    Column("events_pruned_at", UtcDateTime),
    Column("masked_rules", Json),
    Index(
        "ix_tasks_active",
        "next_poll_at",
        sqlite_where=text("finalized_at IS NULL"),
        postgresql_where=text("finalized_at IS NULL"),
    ),
    Index("ix_tasks_created_at", "created_at"),
    # The lease heartbeat (UPDATE ... WHERE lease_owner = :owner) and a run's clean-up;
    # only leased rows are in it, so it stays tiny however large the archive grows.
    Index(
        "ix_tasks_lease_owner",
        "lease_owner",
        sqlite_where=text("lease_owner IS NOT NULL"),
        postgresql_where=text("lease_owner IS NOT NULL"),
    ),
    # Covering indexes of `status` and `credits_by_day` (migration 0011).
    Index(
        "ix_tasks_status_summary",
        "status",
        "finalized_at",
        "next_poll_at",
        "gone_at",
        "event_count",
    ),
    Index("ix_tasks_credits", "created_at_utc", "status", "device", "credits_used"),
    # Keyset pagination of `archiver serve`'s task list (newest first / most credits).
    Index("ix_tasks_created_at_utc_id", "created_at_utc", "id"),
    Index("ix_tasks_credits_used_id", "credits_used", "id"),
)

task_events = Table(
    "task_events",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("task_id", Text, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("event_key", Text, nullable=False),
    Column("event_id", Text),
    Column("name", Text, nullable=False),
    Column("payload", Json),
    Column("timestamp", BigInteger),
    Column("timestamp_utc", UtcDateTime),
    Column("archived_at", UtcDateTime, nullable=False),
    Column("payload_raw", Text),
    # Added by migration 0013: the event's fields beyond name, payload, id and timestamp.
    Column("extra", Json),
    Column("extra_raw", Text),
    # Added by migration 0014: the masking rules that fired on the event.
    Column("masked_rules", Json),
    UniqueConstraint("task_id", "event_key", name="uq_task_events_task_key"),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("run_id", Text, nullable=False, unique=True),
    Column("command", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("outcome", Text, nullable=False),
    Column("tasks_discovered", Integer, nullable=False, server_default="0"),
    Column("tasks_polled", Integer, nullable=False, server_default="0"),
    Column("tasks_finalized", Integer, nullable=False, server_default="0"),
    Column("events_inserted", Integer, nullable=False, server_default="0"),
    Column("requests", Integer, nullable=False, server_default="0"),
    Column("errors", Integer, nullable=False, server_default="0"),
    Column("message", Text),
    # Added by migration 0006 (after the columns above, so they come last).
    Column("artifacts_stored", Integer, nullable=False, server_default="0"),
    Column("tasks_gone", Integer, nullable=False, server_default="0"),
    # Added by migration 0015.
    Column("skipped_leased", Integer, nullable=False, server_default="0"),
    Index("ix_sync_runs_started_at", "started_at"),
)

#: Versioned sync state (discovery watermark, backfill cursor), one JSON value per key.
sync_state = Table(
    "sync_state",
    metadata,
    Column("key", Text, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("value", Json, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

#: One row per command lock ("sync", "backfill"): who holds it and their last heartbeat.
locks = Table(
    "locks",
    metadata,
    Column("name", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("heartbeat_at", UtcDateTime, nullable=False),
    # Added by migration ``locks``: with host, they say whether the holder's pid can be
    # judged from here (same boot, same pid namespace); NULL means it cannot.
    Column("boot_id", Text),
    Column("pid_namespace", Text),
)

#: One row per task and kind of artifact (recording, downloads) once downloads are on.
artifacts = Table(
    "artifacts",
    metadata,
    Column("task_id", Text, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", Text, primary_key=True),
    Column("state", Text, nullable=False),
    Column("blob_url", Text),
    Column("size_bytes", BigInteger),
    Column("sha256", Text),
    Column("content_type", Text),
    Column("source_url", Text),
    Column("fetched_at", UtcDateTime),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("pending_since", UtcDateTime),
    Column("next_attempt_at", UtcDateTime),
    # Added by migration 0014: when the blob was removed (state "pruned").
    Column("pruned_at", UtcDateTime),
    Index("ix_artifacts_state", "state"),
)

#: The members of each stored downloads archive, read from the stored zip.
artifact_files = Table(
    "artifact_files",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("task_id", Text, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("size_bytes", BigInteger),
    Column("compressed_bytes", BigInteger),
    Column("modified_at", UtcDateTime),
    Index("ix_artifact_files_task_id", "task_id"),
)

#: The audit trail of removals (migration 0014): one row per task and removal. It records
#: who, when, why and what (counts, bytes), never the content nor the matched text.
erasures = Table(
    "erasures",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("task_id", Text, nullable=False),
    Column("erased_at", UtcDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("command", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("events_removed", Integer, nullable=False, server_default="0"),
    Column("artifacts_removed", Integer, nullable=False, server_default="0"),
    Column("bytes_removed", BigInteger, nullable=False, server_default="0"),
    Column("matching_sha256", Json),
    Column("rules", Json),
    Column("blobs_pending", Json),
    Index("ix_erasures_task_id", "task_id"),
    Index("ix_erasures_erased_at", "erased_at"),
)
