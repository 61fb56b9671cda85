"""Removing archived content: erasing tasks (tombstones), pruning events and artifacts,
and the ``erasures`` audit trail of every removal.

Every function here runs in the caller's transaction, which must be
:meth:`archiver.store.database.Database.erasing` (secure delete on SQLite) and must hold
the tasks' leases, so no running sync can save into a task while it is removed. The
audit rows never hold the removed content nor the text that was searched for: counts,
bytes, who, when, why, and the SHA-256 of each search text.

Blobs are deleted after the transaction commits: the blob URLs are recorded in the audit
row (``blobs_pending``) in the same transaction that removes the rows, and cleared once
each blob is confirmed gone, so a crash in between leaves a to-do list (finished by the
next ``forget``, ``prune`` or ``verify --repair``), never an unreferenced blob.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from archiver.store.artifacts import PRUNED, STORED
from archiver.store.schema import artifact_files, artifacts, erasures, task_events, tasks

#: What ``prune --only`` can remove, and what ``forget`` removes.
PRUNE_PARTS = ("recordings", "downloads", "events", "tasks")
#: ``prune --only`` names -> artifact kinds.
ARTIFACT_PARTS = {"recordings": "recording", "downloads": "downloads"}
#: The columns a tombstone keeps (besides the archiver's bookkeeping).
TOMBSTONE_KEEPS = ("id", "status", "created_at", "created_at_utc", "device", "credits_used")
#: Everything else a task row holds that came from the API, cleared by an erasure.
_CLEARED_ON_ERASE = (
    "output",
    "output_raw",
    "payload",
    "payload_raw",
    "live_url",
    "recording_url",
    "downloads_url",
    "last_error",
    "masked_rules",
)


@dataclass(frozen=True)
class Audit:
    """Who removes, why, and with which command: the same on every row of one run."""

    actor: str
    reason: str
    command: str
    #: SHA-256 (hex) of each search text of ``forget --matching`` that selected tasks.
    matching_sha256: Sequence[str] = ()
    #: Masking rule names (``mask --apply``).
    rules: Sequence[str] = ()


@dataclass
class Removed:
    """What one removal took from one task."""

    events: int = 0
    artifacts: int = 0
    bytes: int = 0
    #: Blob URLs to delete once the transaction has committed.
    blobs: list[str] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)


def record_erasure(
    conn: Connection, task_id: str, removed: Removed, audit: Audit, *, now: datetime
) -> int:
    """The audit row of one removal; returns its id."""
    result = conn.execute(
        erasures.insert()
        .values(
            task_id=task_id,
            erased_at=now,
            actor=audit.actor,
            reason=audit.reason,
            command=audit.command,
            scope=",".join(removed.scope),
            events_removed=removed.events,
            artifacts_removed=removed.artifacts,
            bytes_removed=removed.bytes,
            matching_sha256=list(audit.matching_sha256) or None,
            rules=list(audit.rules) or None,
            blobs_pending=removed.blobs or None,
        )
        .returning(erasures.c.id)
    )
    return int(result.scalar_one())


def pending_blob_deletions(conn: Connection) -> list[tuple[int, list[str]]]:
    """(audit row id, blob URLs) of every removal whose blobs are not confirmed gone."""
    query = select(erasures.c.id, erasures.c.blobs_pending).where(
        erasures.c.blobs_pending.is_not(None)
    )
    return [(row.id, list(row.blobs_pending)) for row in conn.execute(query) if row.blobs_pending]


def blobs_deleted(conn: Connection, erasure_id: int, remaining: Sequence[str]) -> None:
    """Record that the blobs of an audit row are gone (``remaining``: those that are not)."""
    conn.execute(
        update(erasures)
        .where(erasures.c.id == erasure_id)
        .values(blobs_pending=list(remaining) or None)
    )


# --- what a removal would take ----------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """A task as ``forget`` and ``prune`` list it: what removing it would take."""

    task_id: str
    created_at_utc: datetime | None
    credits_used: int | None
    status: str | None
    erased_at: datetime | None
    finalized: bool
    events: int
    artifacts: int
    bytes: int
    leased_by: str | None


def footprints(conn: Connection, task_ids: Sequence[str]) -> dict[str, Footprint]:
    """The footprint of each of these tasks that the archive holds."""
    found: dict[str, Footprint] = {}
    for start in range(0, len(task_ids), 500):
        chunk = list(task_ids[start : start + 500])
        events = _event_counts(conn, chunk)
        blobs = _stored_blobs(conn, chunk)
        for row in conn.execute(select(tasks).where(tasks.c.id.in_(chunk))):
            kinds = blobs.get(row.id, {})
            found[row.id] = Footprint(
                task_id=row.id,
                created_at_utc=row.created_at_utc,
                credits_used=row.credits_used,
                status=row.status,
                erased_at=row.erased_at,
                finalized=row.finalized_at is not None,
                events=events.get(row.id, 0),
                artifacts=len(kinds),
                bytes=sum(size for _, size in kinds.values()),
                leased_by=row.lease_owner,
            )
    return found


def _event_counts(conn: Connection, task_ids: list[str]) -> dict[str, int]:
    query = (
        select(task_events.c.task_id, func.count())
        .where(task_events.c.task_id.in_(task_ids))
        .group_by(task_events.c.task_id)
    )
    return {task_id: int(count) for task_id, count in conn.execute(query)}


def _stored_blobs(conn: Connection, task_ids: list[str]) -> dict[str, dict[str, tuple[str, int]]]:
    """task id -> kind -> (blob URL, size) of every stored blob of these tasks."""
    query = select(
        artifacts.c.task_id, artifacts.c.kind, artifacts.c.blob_url, artifacts.c.size_bytes
    ).where(artifacts.c.task_id.in_(task_ids), artifacts.c.blob_url.is_not(None))
    found: dict[str, dict[str, tuple[str, int]]] = {}
    for row in conn.execute(query):
        found.setdefault(row.task_id, {})[row.kind] = (row.blob_url, int(row.size_bytes or 0))
    return found


# --- removing -------------------------------------------------------------------------------


def erase_task(conn: Connection, task_id: str, *, owner: str, now: datetime) -> Removed | None:
    """Erase one leased task: every event row, its artifact rows and zip listing, and all
    its content; the row stays as a tombstone (:data:`TOMBSTONE_KEEPS`), finalized and
    released. None when the task is not leased by ``owner`` (or already erased)."""
    blobs = _stored_blobs(conn, [task_id]).get(task_id, {})
    tombstone = conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.lease_owner == owner, tasks.c.erased_at.is_(None))
        .values(
            **dict.fromkeys(_CLEARED_ON_ERASE),
            erased_at=now,
            finalized_at=func.coalesce(tasks.c.finalized_at, now),
            event_count=0,
            event_t=0,
            error_count=0,
            next_poll_at=None,
            lease_owner=None,
            lease_until=None,
        )
    )
    if tombstone.rowcount != 1:
        return None
    removed = Removed(scope=["task"])
    removed.events = _delete_events(conn, task_id)
    conn.execute(delete(artifact_files).where(artifact_files.c.task_id == task_id))
    conn.execute(delete(artifacts).where(artifacts.c.task_id == task_id))
    removed.artifacts = len(blobs)
    removed.bytes = sum(size for _, size in blobs.values())
    removed.blobs = [url for url, _ in blobs.values()]
    return removed


def _delete_events(conn: Connection, task_id: str) -> int:
    return int(conn.execute(delete(task_events).where(task_events.c.task_id == task_id)).rowcount)


def prune_events(conn: Connection, task_id: str, *, owner: str, now: datetime) -> int:
    """Remove a leased finalized task's event rows; the task keeps its row, its
    ``event_count`` and its credits, and says when its events were pruned."""
    marked = conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.lease_owner == owner, tasks.c.erased_at.is_(None))
        .values(events_pruned_at=now, lease_owner=None, lease_until=None)
    )
    if marked.rowcount != 1:
        return 0
    return _delete_events(conn, task_id)


def prune_artifact(conn: Connection, task_id: str, kind: str, *, now: datetime) -> Removed:
    """Remove a stored artifact's blob (after commit) and, for a downloads archive, its
    member listing; the row becomes ``pruned``, never fetched again."""
    removed = Removed()
    row = conn.execute(
        select(artifacts.c.blob_url, artifacts.c.size_bytes).where(
            artifacts.c.task_id == task_id, artifacts.c.kind == kind, artifacts.c.state == STORED
        )
    ).first()
    if row is None:
        return removed
    conn.execute(
        update(artifacts)
        .where(artifacts.c.task_id == task_id, artifacts.c.kind == kind)
        .values(state=PRUNED, pruned_at=now, blob_url=None, last_error=None)
    )
    if kind == "downloads":
        conn.execute(delete(artifact_files).where(artifact_files.c.task_id == task_id))
    removed.artifacts, removed.bytes = 1, int(row.size_bytes or 0)
    removed.blobs = [row.blob_url] if row.blob_url else []
    return removed


def erased_ids(conn: Connection, task_ids: Sequence[str]) -> dict[str, datetime]:
    """The tombstones among these ids, with when they were erased."""
    found: dict[str, datetime] = {}
    for start in range(0, len(task_ids), 500):
        chunk = list(task_ids[start : start + 500])
        query = select(tasks.c.id, tasks.c.erased_at).where(
            tasks.c.id.in_(chunk), tasks.c.erased_at.is_not(None)
        )
        found.update({row.id: row.erased_at for row in conn.execute(query)})
    return found


def governance_counts(conn: Connection) -> dict[str, Any]:
    """For ``status``, health and metrics: erased tasks, tasks whose events were pruned,
    pruned artifacts, and blob deletions not yet confirmed."""
    erased = conn.scalar(select(func.count()).where(tasks.c.erased_at.is_not(None))) or 0
    pruned_events = (
        conn.scalar(select(func.count()).where(tasks.c.events_pruned_at.is_not(None))) or 0
    )
    pruned = conn.scalar(select(func.count()).where(artifacts.c.state == PRUNED)) or 0
    pending = sum(len(urls) for _, urls in pending_blob_deletions(conn))
    return {
        "tasks_erased": int(erased),
        "tasks_events_pruned": int(pruned_events),
        "artifacts_pruned": int(pruned),
        "blob_deletions_pending": pending,
    }
