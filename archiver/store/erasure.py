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

import orjson
from sqlalchemy import Connection, Text, and_, cast, delete, func, or_, select, tuple_, update
from sqlalchemy.sql.elements import ColumnElement

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
    ``event_count`` and its credits, and says when its events were pruned (only when it
    had some). Returns how many rows went (0 when the task is not leased by ``owner``)."""
    leased = conn.scalar(
        select(func.count()).where(
            tasks.c.id == task_id, tasks.c.lease_owner == owner, tasks.c.erased_at.is_(None)
        )
    )
    if not leased:
        return 0
    deleted = _delete_events(conn, task_id)
    if deleted:
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(events_pruned_at=now))
    return deleted


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


def gone_tombstones(conn: Connection) -> int:
    """Erased tasks that were recorded as gone (``--recheck-gone`` leaves them)."""
    query = select(func.count()).where(tasks.c.erased_at.is_not(None), tasks.c.gone_at.is_not(None))
    return int(conn.scalar(query) or 0)


# --- finding tasks by their content (forget --matching) -------------------------------------

#: Where a task's content can be: every column that holds text from the API or quotes it.
_TASK_TEXT = ("output", "payload", "output_raw", "payload_raw", "last_error")
_EVENT_TEXT = ("payload", "extra", "payload_raw", "extra_raw")
_ARTIFACT_TEXT = ("source_url", "last_error")


def tasks_matching(conn: Connection, needle: str) -> set[str]:
    """The not-yet-erased tasks whose stored content contains ``needle``, a plain
    substring compared without regard to case: the output, the stored payload (and so
    every unknown field), every event's payload and unknown fields, their raw JSON
    companions, error texts, artifact links and the names of files in a stored zip.

    Letters compare after lower-casing: ASCII ones everywhere; others by Python's
    ``str.lower`` on SQLite (a function registered on the connection) and by a
    case-insensitive character class on PostgreSQL, so the database's locale does not
    matter. JSON text escapes some characters (``"``, ``\\``, controls): both the text
    and its escaped form are looked for.
    """
    forms = {needle, orjson.dumps(needle).decode()[1:-1]}
    found: set[str] = set()
    sources = (
        (tasks, tasks.c.id, _TASK_TEXT),
        (task_events, task_events.c.task_id, _EVENT_TEXT),
        (artifacts, artifacts.c.task_id, _ARTIFACT_TEXT),
        (artifact_files, artifact_files.c.task_id, ("name",)),
    )
    for table, task_id, names in sources:
        condition = or_(*(_contains(conn, table.c[name], form) for name in names for form in forms))
        found.update(conn.scalars(select(task_id).where(condition).distinct()))
    if not found:
        return found
    return set(found) - set(erased_ids(conn, sorted(found)))


def _contains(conn: Connection, column: Any, needle: str) -> ColumnElement[bool]:
    text = cast(column, Text)
    if needle.isascii():
        return (
            func.instr(func.lower(text), needle.lower()) > 0
            if _sqlite(conn)
            else (func.strpos(func.lower(text), needle.lower()) > 0)
        )
    if _sqlite(conn):
        _register_lower(conn)
        return func.instr(func.archiver_lower(text), needle.lower()) > 0
    return text.op("~")(_case_insensitive_pattern(needle))


def _sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def _register_lower(conn: Connection) -> None:
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.create_function("archiver_lower", 1, _lower, deterministic=True)


def _lower(value: Any) -> str | None:
    if value is None:
        return None
    return (value if isinstance(value, str) else str(value)).lower()


def _case_insensitive_pattern(needle: str) -> str:
    """A PostgreSQL regular expression matching ``needle`` literally, each letter in any
    case (a bracket of its case forms), whatever the database's locale."""
    parts = []
    for char in needle:
        forms = sorted({form for form in (char, char.lower(), char.upper()) if len(form) == 1})
        if len(forms) > 1:
            parts.append("[" + "".join(_bracket_escape(form) for form in forms) + "]")
        else:
            parts.append(char if char.isalnum() else "\\" + char)
    return "".join(parts)


def _bracket_escape(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char


# --- retention (prune) ----------------------------------------------------------------------


@dataclass(frozen=True)
class PruneScope:
    """Which tasks ``prune`` looks at: finalized, not erased, created before ``cutoff``
    (a task without a creation time has no age and is never pruned), with one of
    ``statuses`` if any are given."""

    cutoff: datetime
    statuses: Sequence[str] = ()

    def condition(self) -> ColumnElement[bool]:
        conditions = [
            tasks.c.erased_at.is_(None),
            tasks.c.finalized_at.is_not(None),
            tasks.c.created_at_utc < self.cutoff,
        ]
        if self.statuses:
            conditions.append(tasks.c.status.in_(list(self.statuses)))
        return and_(*conditions)


def prune_batch(
    conn: Connection, scope: PruneScope, *, after: tuple[datetime, str] | None, limit: int
) -> list[tuple[datetime, str]]:
    """The next ``limit`` tasks in scope, oldest first, after ``after`` (keyset over the
    ``(created_at_utc, id)`` index: every batch costs the same)."""
    key = tuple_(tasks.c.created_at_utc, tasks.c.id)
    query = select(tasks.c.created_at_utc, tasks.c.id).where(scope.condition())
    if after is not None:
        query = query.where(key > tuple_(*after))
    query = query.order_by(tasks.c.created_at_utc, tasks.c.id).limit(limit)
    return [(row.created_at_utc, row.id) for row in conn.execute(query)]


def unfinalized_before(conn: Connection, scope: PruneScope) -> int:
    """Tasks older than the cutoff that are still polled: never pruned (a poll would store
    their events again); said so in prune's report."""
    conditions = [
        tasks.c.erased_at.is_(None),
        tasks.c.finalized_at.is_(None),
        tasks.c.created_at_utc < scope.cutoff,
    ]
    if scope.statuses:
        conditions.append(tasks.c.status.in_(list(scope.statuses)))
    return int(conn.scalar(select(func.count()).where(*conditions)) or 0)


def prune_totals(conn: Connection, scope: PruneScope, parts: Sequence[str]) -> dict[str, int]:
    """What ``prune`` would remove, in totals: tasks in scope, and per part its rows or
    blobs and bytes (the dry run's report)."""
    in_scope = select(tasks.c.id).where(scope.condition())
    totals = {"tasks": int(conn.scalar(select(func.count()).select_from(in_scope.subquery())) or 0)}
    if "events" in parts or "tasks" in parts:
        not_pruned = select(tasks.c.id).where(scope.condition(), tasks.c.events_pruned_at.is_(None))
        totals["events"] = int(
            conn.scalar(select(func.count()).where(task_events.c.task_id.in_(not_pruned))) or 0
        )
    kinds = [kind for part, kind in ARTIFACT_PARTS.items() if part in parts or "tasks" in parts]
    if kinds:
        row = conn.execute(
            select(func.count(), func.coalesce(func.sum(artifacts.c.size_bytes), 0)).where(
                artifacts.c.task_id.in_(in_scope),
                artifacts.c.state == STORED,
                artifacts.c.kind.in_(kinds),
            )
        ).one()
        totals["artifacts"], totals["bytes"] = int(row[0]), int(row[1])
    return totals
