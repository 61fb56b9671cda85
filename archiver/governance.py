"""``archiver forget`` and ``archiver prune``: removing archived content for good, in
batches, beside a running sync, audited in ``erasures`` (docs/governance.md).

Each batch is one :meth:`~archiver.store.database.Database.erasing` transaction that
holds the batch's task leases (taken like any run takes them, so a task a running sync
is polling is left until its lease is released, and no save can bring a removed task
back), removes the rows and writes the audit rows with the blobs still to delete; the
blobs are shredded after the commit and the audit rows updated. SQLite's WAL is
checkpointed and truncated at the end, so neither the database file nor its ``-wal``
holds removed text.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection

from archiver.blobs import BlobStore
from archiver.config import format_duration, format_size
from archiver.escapes import visible
from archiver.exceptions import ArchiverError, BlobStoreError, ConfigError
from archiver.store import erasure
from archiver.store.database import Database
from archiver.store.erasure import Audit, Footprint, PruneScope, Removed
from archiver.store.locks import RunLock
from archiver.timestamps import utcnow

log = logging.getLogger(__name__)

#: Tasks removed per transaction: small enough that a sync waits for at most one batch.
BATCH = 200
#: How often ``forget`` asks again for tasks a running sync or backfill holds.
LEASE_RETRY_S = 0.5
#: Batches of ``prune`` between two WAL checkpoints (SQLite), which bound the WAL's size.
CHECKPOINT_EVERY = 25
#: SQLite: the pause after each batch. SQLite's busy handler lets a waiting writer (a
#: sync) retry only every few tens of milliseconds and is not fair, so without a pause the
#: next batch takes the write lock first and a sync waits for the whole prune.
SQLITE_YIELD_S = 0.1


def default_actor() -> str:
    """The operating-system user, for ``--actor``."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def sha256_hex(text: str) -> str:
    """The SHA-256 of a ``--matching`` text (UTF-8), as the audit trail keeps it."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# --- what to forget -------------------------------------------------------------------------


@dataclass
class Selection:
    """The tasks ``forget`` was asked about, and which ``--matching`` texts found each."""

    ids: list[str] = field(default_factory=list)
    #: task id -> SHA-256 of each --matching text that found it.
    matched: dict[str, list[str]] = field(default_factory=dict)


def select_tasks(db: Database, ids: Iterable[str], matching: Sequence[str]) -> Selection:
    """The named ids (in order, once each) followed by every task a ``--matching`` text
    finds (see :func:`archiver.store.erasure.tasks_matching`)."""
    selection = Selection(ids=list(dict.fromkeys(ids)))
    with db.reading() as conn:
        for needle in matching:
            digest = sha256_hex(needle)
            for task_id in sorted(erasure.tasks_matching(conn, needle)):
                selection.matched.setdefault(task_id, []).append(digest)
    selection.ids += [task_id for task_id in selection.matched if task_id not in selection.ids]
    return selection


@dataclass
class Plan:
    """What ``forget`` would do: the tasks it would erase, and those it cannot."""

    erase: list[Footprint] = field(default_factory=list)
    erased_before: list[Footprint] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def plan_forget(db: Database, selection: Selection) -> Plan:
    with db.reading() as conn:
        found = erasure.footprints(conn, selection.ids)
    plan = Plan()
    for task_id in selection.ids:
        task = found.get(task_id)
        if task is None:
            plan.unknown.append(task_id)
        elif task.erased_at is not None:
            plan.erased_before.append(task)
        else:
            plan.erase.append(task)
    return plan


# --- forget ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a ``forget`` or ``prune`` run removed, and what it could not."""

    tasks: int = 0
    events: int = 0
    artifacts: int = 0
    bytes: int = 0
    #: (task id, why) of tasks left as they were.
    left: list[tuple[str, str]] = field(default_factory=list)
    #: Blob URLs whose deletion failed (recorded in erasures.blobs_pending, retried).
    blobs_failed: list[str] = field(default_factory=list)
    #: False when the WAL could not be truncated (a reader held it): see the message.
    checkpointed: bool = True

    def add(self, removed: Removed) -> None:
        self.tasks += 1
        self.events += removed.events
        self.artifacts += removed.artifacts
        self.bytes += removed.bytes


Echo = Callable[[str], None]


def forget(
    db: Database,
    plan: Plan,
    selection: Selection,
    audit: Audit,
    *,
    wait_s: float,
    echo: Echo,
) -> Outcome:
    """Erase the planned tasks (see the module docstring). A task a running sync or
    backfill holds is asked for again until ``wait_s`` has passed, then left."""
    outcome = Outcome()
    lock = RunLock(db, "forget")
    lock.acquire()
    try:
        finish_blob_deletions(db, outcome)
        todo = [task.task_id for task in plan.erase]
        deadline = time.monotonic() + wait_s
        while todo:
            todo = _forget_batches(db, lock, todo, selection, audit, outcome, echo)
            if not todo or time.monotonic() >= deadline:
                break
            time.sleep(LEASE_RETRY_S)
        holders = _holders(db, todo)
        outcome.left += [(task_id, holders.get(task_id, "busy")) for task_id in todo]
    finally:
        lock.release()
    outcome.checkpointed = db.checkpoint()
    return outcome


def _forget_batches(
    db: Database,
    lock: RunLock,
    todo: list[str],
    selection: Selection,
    audit: Audit,
    outcome: Outcome,
    echo: Echo,
) -> list[str]:
    """Erase what can be claimed now; returns the ids another run still holds."""
    busy: list[str] = []
    for start in range(0, len(todo), BATCH):
        chunk = todo[start : start + BATCH]
        done: list[tuple[str, Removed, int]] = []
        with db.erasing() as conn:
            claimed = set(lock.claim(conn, chunk))
            now = utcnow()
            for task_id in chunk:
                removed = (
                    erasure.erase_task(conn, task_id, owner=lock.owner, now=now)
                    if task_id in claimed
                    else None
                )
                if removed is None:
                    busy.append(task_id)
                    continue
                row_audit = _with_matches(audit, selection.matched.get(task_id, []))
                done.append(
                    (
                        task_id,
                        removed,
                        erasure.record_erasure(conn, task_id, removed, row_audit, now=now),
                    )
                )
        _yield_to_writers(db)
        for task_id, removed, audit_id in done:
            _shred(db, audit_id, removed.blobs, outcome, task_id=task_id)
            outcome.add(removed)
            echo(
                f"erased {task_id}: {removed.events} events, {removed.artifacts} artifacts "
                f"({removed.bytes} bytes)"
            )
    return busy


def _yield_to_writers(db: Database) -> None:
    """Let a waiting writer in between two batches (see :data:`SQLITE_YIELD_S`)."""
    if db.dialect == "sqlite":
        time.sleep(SQLITE_YIELD_S)


def _with_matches(audit: Audit, digests: list[str]) -> Audit:
    return Audit(audit.actor, audit.reason, audit.command, tuple(digests), audit.rules)


def _holders(db: Database, task_ids: list[str]) -> dict[str, str]:
    """Why each task could not be erased: which run holds its lease."""
    if not task_ids:
        return {}
    with db.reading() as conn:
        found = erasure.footprints(conn, task_ids)
    return {
        task_id: (
            f"already erased on {task.erased_at:%Y-%m-%d %H:%M} UTC"
            if task.erased_at is not None
            else "a running sync or backfill is working on it (its lease is held); "
            "run `archiver forget` again when that run has finished"
        )
        for task_id, task in found.items()
    }


# --- blobs ------------------------------------------------------------------------------------


def _shred(
    db: Database, audit_id: int, urls: list[str], outcome: Outcome, *, task_id: str | None
) -> None:
    """Delete the blobs an audit row lists (and a task's temporaries), then record which
    are gone; a failure stays in ``blobs_pending`` for the next run."""
    remaining: list[str] = []
    for url in urls:
        try:
            store, key = BlobStore.for_blob_url(url)
            store.shred(key)
            if task_id is not None:
                store.shred_temporaries(task_id)
        except (BlobStoreError, ArchiverError) as exc:
            log.warning("could not delete blob %s yet (%s); it is retried next run", url, exc)
            remaining.append(url)
    outcome.blobs_failed += remaining
    if urls:
        with db.transaction() as conn:
            erasure.blobs_deleted(conn, audit_id, remaining)


def finish_blob_deletions(db: Database, outcome: Outcome | None = None) -> int:
    """Delete the blobs an earlier run removed from the archive but could not delete (or
    was stopped before deleting); returns how many were deleted now."""
    with db.reading() as conn:
        pending = erasure.pending_blob_deletions(conn)
    scratch = outcome or Outcome()
    before = len(scratch.blobs_failed)
    total = 0
    for audit_id, urls in pending:
        _shred(db, audit_id, urls, scratch, task_id=None)
        total += len(urls)
    return total - (len(scratch.blobs_failed) - before)


# --- prune ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneRequest:
    scope: PruneScope
    parts: tuple[str, ...]


def prune(db: Database, request: PruneRequest, audit: Audit, *, echo: Echo) -> Outcome:
    """Remove what ``request`` selects, batch by batch (a sync may run between two)."""
    outcome = Outcome()
    lock = RunLock(db, "prune")
    lock.acquire()
    try:
        finish_blob_deletions(db, outcome)
        after: tuple[datetime, str] | None = None
        batches = 0
        while True:
            with db.reading() as conn:
                batch = erasure.prune_batch(conn, request.scope, after=after, limit=BATCH)
            if not batch:
                break
            after = batch[-1]
            _prune_batch(db, lock, [task_id for _, task_id in batch], request, audit, outcome)
            _yield_to_writers(db)
            batches += 1
            if batches % CHECKPOINT_EVERY == 0:
                db.checkpoint()
                echo(f"... {outcome.tasks} tasks pruned so far")
    finally:
        lock.release()
    outcome.checkpointed = db.checkpoint()
    return outcome


def _prune_batch(
    db: Database,
    lock: RunLock,
    task_ids: list[str],
    request: PruneRequest,
    audit: Audit,
    outcome: Outcome,
) -> None:
    done: list[tuple[int, Removed, str]] = []
    with db.erasing() as conn:
        claimed = set(lock.claim(conn, task_ids))
        now = utcnow()
        for task_id in task_ids:
            if task_id not in claimed:
                outcome.left.append((task_id, "a running sync or backfill holds its lease"))
                continue
            removed = _prune_task(conn, task_id, request.parts, owner=lock.owner, now=now)
            if removed is not None and removed.scope:
                done.append(
                    (
                        erasure.record_erasure(conn, task_id, removed, audit, now=now),
                        removed,
                        task_id,
                    )
                )
        lock.release_tasks(conn, list(claimed))
    for audit_id, removed, task_id in done:
        _shred(
            db,
            audit_id,
            removed.blobs,
            outcome,
            task_id=task_id if "task" in removed.scope else None,
        )
        outcome.add(removed)


def _prune_task(
    conn: Connection, task_id: str, parts: Sequence[str], *, owner: str, now: datetime
) -> Removed | None:
    """Remove the parts of one leased task; None when it could not be erased."""
    if "tasks" in parts:
        return erasure.erase_task(conn, task_id, owner=owner, now=now)
    removed = Removed()
    for part, kind in erasure.ARTIFACT_PARTS.items():
        if part in parts:
            gone = erasure.prune_artifact(conn, task_id, kind, now=now)
            if gone.artifacts:
                removed.scope.append(kind)
                removed.artifacts += gone.artifacts
                removed.bytes += gone.bytes
                removed.blobs += gone.blobs
    if "events" in parts:
        events = erasure.prune_events(conn, task_id, owner=owner, now=now)
        if events:
            removed.scope.append("events")
            removed.events = events
    return removed


# --- requests and what the commands print ----------------------------------------------------


def check_request(ids: Sequence[str], matching: Sequence[str], reason: str) -> None:
    """What ``forget`` was given makes sense; a ConfigError (exit 2) otherwise."""
    if not ids and not matching:
        raise ConfigError(
            "forget: name the tasks to erase: TASK_ID arguments, --ids-file PATH or "
            "--matching TEXT (see `archiver forget --help`)."
        )
    for text in matching:
        if not text.strip():
            raise ConfigError(
                "--matching '': an empty text would match every task; give the text to look "
                "for, e.g. --matching alice@example.com."
            )
    _check_reason(reason)


def _check_reason(reason: str) -> None:
    if not reason.strip():
        raise ConfigError(
            "--reason '': the audit trail needs a reason, e.g. --reason 'DSR-2041' or "
            "--reason 'retention policy'."
        )


def prune_request(
    older_than_s: float, only: str, statuses: Sequence[str], reason: str
) -> PruneRequest:
    """``prune``'s options, checked; a ConfigError (exit 2) names what is wrong."""
    _check_reason(reason)
    parts = tuple(dict.fromkeys(part.strip() for part in only.split(",") if part.strip()))
    wrong = [part for part in parts if part not in erasure.PRUNE_PARTS]
    if wrong or not parts:
        raise ConfigError(
            f"--only {only!r}: {', '.join(map(repr, wrong)) or 'nothing'} is not something prune "
            f"removes; use a comma-separated list of {', '.join(erasure.PRUNE_PARTS)}."
        )
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    return PruneRequest(PruneScope(cutoff, tuple(statuses)), parts)


def _when(value: datetime | None) -> str:
    return "(no date)" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def describe_plan(plan: Plan, *, matched: dict[str, list[str]]) -> list[str]:
    """``forget``'s list: each task to erase, what it holds, and what cannot be erased."""
    lines = [
        f"{visible(task.task_id)}  created {_when(task.created_at_utc)}  "
        f"credits {task.credits_used if task.credits_used is not None else '-'}  "
        f"{task.events} events  {task.artifacts} artifacts ({format_size(task.bytes)})"
        + (f"  [matched {len(matched[task.task_id])} text(s)]" if task.task_id in matched else "")
        + ("" if task.finalized else "  [still polled: erased now, never polled again]")
        for task in plan.erase
    ]
    lines += [
        f"{visible(task.task_id)}  already erased on {_when(task.erased_at)}"
        for task in plan.erased_before
    ]
    lines += [
        f"{visible(task_id)}  not in the archive (nothing to erase)" for task_id in plan.unknown
    ]
    events = sum(task.events for task in plan.erase)
    blobs = sum(task.artifacts for task in plan.erase)
    size = sum(task.bytes for task in plan.erase)
    lines.append(
        f"{len(plan.erase)} task(s) to erase: {events} events, {blobs} artifacts "
        f"({format_size(size)}); tombstones keep id, status, created_at, device and credits."
    )
    return lines


def describe_outcome(outcome: Outcome, verb: str) -> list[str]:
    lines = [f"{visible(task_id)}  left as it was: {why}" for task_id, why in outcome.left]
    lines += [
        "blob not deleted yet (retried by the next forget, prune or verify --repair): "
        + visible(url)
        for url in outcome.blobs_failed
    ]
    if not outcome.checkpointed:
        lines.append(
            "the SQLite WAL could not be truncated (a reader kept it open): removed text may "
            "remain in the -wal file until the next checkpoint; stop readers (archiver serve, "
            "sqlite3 sessions) and run the command again."
        )
    lines.append(
        f"{verb} {outcome.tasks} task(s): {outcome.events} events, {outcome.artifacts} "
        f"artifacts ({format_size(outcome.bytes)}); each recorded in the erasures table."
    )
    return lines


def describe_prune(db: Database, request: PruneRequest, older_than_s: float) -> list[str]:
    """``prune``'s dry-run report: what is in scope and what would go."""
    scope = request.scope
    with db.reading() as conn:
        totals = erasure.prune_totals(conn, scope, request.parts)
        polled = erasure.unfinalized_before(conn, scope)
    statuses = f" with status {', '.join(map(visible, scope.statuses))}" if scope.statuses else ""
    lines = [
        f"tasks created before {_when(scope.cutoff)} (older than "
        f"{format_duration(older_than_s)}){statuses}, finalized: {totals['tasks']}",
    ]
    if "tasks" in request.parts:
        lines.append(
            f"  whole tasks erased (tombstones stay): {totals['tasks']}, with "
            f"{totals.get('events', 0)} events and {totals.get('artifacts', 0)} blobs "
            f"({format_size(totals.get('bytes', 0))})"
        )
    else:
        if "events" in request.parts:
            lines.append(f"  events: {totals.get('events', 0)} rows")
        if "artifacts" in totals:
            lines.append(
                f"  {' and '.join(p for p in request.parts if p in erasure.ARTIFACT_PARTS)}: "
                f"{totals['artifacts']} blobs ({format_size(totals['bytes'])})"
            )
    if polled:
        lines.append(f"  {polled} older task(s) are still polled and are left alone")
    return lines
