"""Artifacts as stored: their kinds and states, and every query about them (their rows,
what is still to do, what ``status`` shows and what ``verify`` checks)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select

from archiver.exceptions import (
    LeaseLost,
)
from archiver.models import TERMINAL_STATUSES
from archiver.redact import redact
from archiver.store.engines import dialect_insert
from archiver.store.schema import artifact_files, artifacts, tasks
from archiver.timestamps import aware, utcnow

log = logging.getLogger(__name__)

KINDS = ("recording", "downloads")
PENDING, STORED, ABSENT, FAILED = "pending", "stored", "absent", "failed"
#: Stored once, then removed by ``archiver prune``: final, never fetched again.
PRUNED = "pruned"
STATES = (PENDING, STORED, ABSENT, FAILED, PRUNED)
FINAL_STATES = frozenset({STORED, ABSENT, FAILED, PRUNED})
MAX_ERROR_CHARS = 2000


def clean_message(text: str) -> str:
    """A message safe to store and show: presigned query strings masked, length capped."""
    return redact(text, [])[:MAX_ERROR_CHARS]


@dataclass(frozen=True)
class ArtifactRow:
    """One row of ``artifacts`` as the state machine needs it."""

    task_id: str
    kind: str
    state: str
    attempts: int
    pending_since: datetime | None
    next_attempt_at: datetime | None
    blob_url: str | None
    size_bytes: int | None
    sha256: str | None
    last_error: str | None


def load_artifacts(conn: Connection, task_id: str) -> dict[str, ArtifactRow]:
    """The task's artifact rows by kind."""
    rows = conn.execute(select(artifacts).where(artifacts.c.task_id == task_id))
    return {
        row.kind: ArtifactRow(
            task_id=row.task_id,
            kind=row.kind,
            state=row.state,
            attempts=row.attempts,
            pending_since=aware(row.pending_since),
            next_attempt_at=aware(row.next_attempt_at),
            blob_url=row.blob_url,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            last_error=row.last_error,
        )
        for row in rows
    }


def save_artifact(
    conn: Connection,
    task_id: str,
    kind: str,
    values: dict[str, Any],
    *,
    owner: str | None,
    files: Sequence[dict[str, Any]] | None = None,
) -> None:
    """Insert or update one artifact row (and replace the task's file listing if given).

    With ``owner``, raises LeaseLost (the caller's transaction rolls back) unless that run
    still holds the task's lease.
    """
    if owner is not None:
        holder = conn.scalar(select(tasks.c.lease_owner).where(tasks.c.id == task_id))
        if holder != owner:
            raise LeaseLost(task_id)
    if "last_error" in values and values["last_error"] is not None:
        values = {**values, "last_error": clean_message(values["last_error"])}
    row = {"task_id": task_id, "kind": kind, **values}
    stmt = dialect_insert(conn, artifacts).values(row)
    conn.execute(stmt.on_conflict_do_update(index_elements=["task_id", "kind"], set_=values))
    if files is not None:
        conn.execute(delete(artifact_files).where(artifact_files.c.task_id == task_id))
        if files:
            conn.execute(artifact_files.insert(), [{"task_id": task_id, **f} for f in files])


def _artifacts_to_do(now: datetime) -> Any:
    """Finalized, terminal, not gone tasks whose artifacts are not all in a final state:
    a kind without a row (archived while downloads were off) or a row still pending and
    not in back-off. Never an erased task, nor one whose events were pruned (reading it
    again would store them again)."""
    settled = (
        select(artifacts.c.task_id)
        .where(artifacts.c.state.in_(sorted(FINAL_STATES)))
        .group_by(artifacts.c.task_id)
        .having(func.count() >= len(KINDS))
    )
    held_back = select(artifacts.c.task_id).where(
        artifacts.c.state == PENDING, artifacts.c.next_attempt_at > now
    )
    return (
        select(tasks.c.id)
        .where(tasks.c.finalized_at.is_not(None))
        .where(tasks.c.gone_at.is_(None))
        .where(tasks.c.erased_at.is_(None), tasks.c.events_pruned_at.is_(None))
        .where(tasks.c.status.in_(sorted(TERMINAL_STATUSES)))
        .where(tasks.c.id.not_in(settled))
        .where(tasks.c.id.not_in(held_back))
    )


def tasks_missing_artifacts(conn: Connection, now: datetime | None = None) -> list[str]:
    """Finalized tasks whose artifacts still need work, oldest first.

    ``sync --downloads`` and ``backfill --downloads`` revisit them (with fresh links from
    Get Task), so turning downloads on later covers the history already archived, and an
    artifact left pending by a failure is retried whatever its task's state.
    """
    query = _artifacts_to_do(now or utcnow()).order_by(
        tasks.c.created_at.asc().nulls_first(), tasks.c.id
    )
    return list(conn.scalars(query))


def artifact_status(conn: Connection) -> dict[str, Any]:
    """Artifact counts by state and the bytes stored, for ``archiver status``."""
    by_state = {state: 0 for state in STATES}
    for state, count in conn.execute(
        select(artifacts.c.state, func.count()).group_by(artifacts.c.state)
    ):
        by_state[state] = count
    stored_bytes = conn.scalar(
        select(func.coalesce(func.sum(artifacts.c.size_bytes), 0)).where(
            artifacts.c.state == STORED
        )
    )
    to_do: int | None = 0
    if any(by_state.values()):  # only archives that ever ran with --downloads
        to_do = conn.scalar(select(func.count()).select_from(_artifacts_to_do(utcnow()).subquery()))
    return {
        "artifacts_by_state": by_state,
        "artifact_bytes_stored": int(stored_bytes or 0),
        "tasks_with_artifacts_to_do": int(to_do or 0),
    }


@dataclass(frozen=True)
class StoredArtifact:
    """A row ``verify`` checks."""

    task_id: str
    kind: str
    state: str
    blob_url: str | None
    size_bytes: int | None
    sha256: str | None
    event_t: int


def artifacts_to_verify(
    conn: Connection, task_ids: Sequence[str] | None, *, states: Iterable[str] = (STORED,)
) -> list[StoredArtifact]:
    query = (
        select(
            artifacts.c.task_id,
            artifacts.c.kind,
            artifacts.c.state,
            artifacts.c.blob_url,
            artifacts.c.size_bytes,
            artifacts.c.sha256,
            tasks.c.event_t,
        )
        .join(tasks, tasks.c.id == artifacts.c.task_id)
        .where(artifacts.c.state.in_(list(states)))
        .order_by(artifacts.c.task_id, artifacts.c.kind)
    )
    if task_ids:
        query = query.where(artifacts.c.task_id.in_(list(task_ids)))
    return [StoredArtifact(**row._asdict()) for row in conn.execute(query)]
