"""``archiver mask --apply``: the current rules applied to what is already archived.

Tasks' output, payload (and the columns drawn from it), ``last_error``; events' payload
and unknown fields; artifacts' ``source_url`` and ``last_error``. Without ``--yes`` a dry
run in a read-only transaction says what would change. With it, tasks are rewritten in
batches (bounded memory, one transaction per batch, so a ``sync`` can run between them),
each batch under secure delete (:meth:`Database.erasing`) and under the tasks' leases (a
task a running pass is working on is left for a later round, never rewritten under it);
event keys that masking changes are recomputed (``store.masking.rekey_events``), every
task changed gets one ``erasures`` row (scope ``mask``, the rules that fired, the events
rewritten), and the SQLite WAL is checkpointed at the end so no page image of the old
content stays in it.
"""

from __future__ import annotations

import getpass
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection

from archiver.jsonvalues import column_values
from archiver.masking.masker import Masker
from archiver.models import TaskEvent, TaskInfo
from archiver.store import masking as store
from archiver.store.columns import TASK_COLUMNS
from archiver.store.database import Database
from archiver.store.erasure import Audit, Removed, record_erasure
from archiver.store.locks import RunLock
from archiver.timestamps import utcnow

log = logging.getLogger(__name__)

#: Tasks per transaction, and event rows read at a time: what bounds memory.
BATCH_TASKS = 200
EVENT_CHUNK = 1000
#: Rounds of asking again for tasks another run was working on, and the wait between.
LEASE_ROUNDS = 3
LEASE_WAIT_S = 1.0
#: The task columns masking can change (the others hold numbers and times).
MASKED_COLUMNS = (
    "payload",
    "payload_raw",
    "status",
    "output",
    "output_raw",
    "device",
    "live_url",
    "recording_url",
    "downloads_url",
)


def default_actor() -> str:
    """Who runs the command, for the audit trail: the operating-system user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container) and no LOGNAME/USER
        return f"uid {os.getuid()}"


def shown(text: str) -> str:
    """A text from the archive as a terminal may print it (escapes for anything else)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


@dataclass
class TaskChange:
    """What masking changes (or would change) in one task."""

    task_id: str
    parts: list[str] = field(default_factory=list)
    events: int = 0
    rekeyed: int = 0
    artifacts: int = 0
    fired: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.parts or self.events or self.artifacts)

    def describe(self, masker: Masker) -> str:
        what = [*self.parts]
        if self.events:
            what.append(f"{self.events} event(s)")
        if self.rekeyed:
            what.append(f"{self.rekeyed} event key(s) recomputed")
        if self.artifacts:
            what.append(f"{self.artifacts} artifact row(s)")
        return f"{shown(self.task_id)}: {', '.join(what)} [{', '.join(masker.fired(self.fired))}]"


@dataclass
class MaskOutcome:
    """What a ``mask --apply`` run did (or, as a dry run, would do)."""

    tasks: int = 0
    events: int = 0
    artifacts: int = 0
    #: ``sync_runs`` messages masked (not per task: no erasures row).
    runs: int = 0
    #: Tasks another run kept working on through every round: left as they are.
    left: list[str] = field(default_factory=list)
    checkpointed: bool = True

    def add(self, change: TaskChange) -> None:
        self.tasks += 1
        self.events += change.events
        self.artifacts += 1 if change.artifacts else 0


# --- one task ------------------------------------------------------------------------


class TaskMasking:
    """Masks one task's rows in ``conn`` (writing them only when ``write``)."""

    def __init__(self, conn: Connection, masker: Masker, *, write: bool) -> None:
        self.conn = conn
        self.masker = masker
        self.write = write
        self.dialect = conn.dialect.name

    def run(self, row: Any, artifact_rows: Sequence[Any]) -> TaskChange:
        change = TaskChange(row.id)
        values = self._task_values(row, change)
        if row.last_error:
            error = self.masker.text(row.last_error, change.fired)
            if error is not row.last_error:
                values["last_error"] = error
                change.parts.append("last_error")
        if values and self.write:
            store.update_task(self.conn, row.id, values)
        self._events(row.id, change)
        for artifact in artifact_rows:
            self._artifact(artifact, change)
        return change

    def _task_values(self, row: Any, change: TaskChange) -> dict[str, Any]:
        """The task's masked columns (none when no rule fires on its payload)."""
        payload = store.exact(row.payload, row.payload_raw)
        if not isinstance(payload, dict):
            return {}  # tracked by id, never read: nothing stored to mask
        try:
            task = TaskInfo.model_validate(payload)
        except ValidationError:  # stored by an older archiver: its fields as they are
            task = TaskInfo.model_construct(**payload)
        masked = self.masker.task(task, events=False)
        if masked is task:
            return {}
        change.parts.append("payload")
        change.fired.update(masked.masked_rules)
        columns = TASK_COLUMNS.values(masked, self.dialect)
        values = {name: columns[name] for name in MASKED_COLUMNS}
        values["masked_rules"] = _union(row.masked_rules, masked.masked_rules, self.masker)
        return values

    def _events(self, task_id: str, change: TaskChange) -> None:
        """Every event row of the task, a chunk at a time; keys recomputed at the end."""
        rekeys: list[tuple[int, str]] = []
        after: int | None = None
        while rows := store.event_chunk(self.conn, task_id, after, EVENT_CHUNK):
            for row in rows:
                rekey = self._event(row, change)
                if rekey is not None:
                    rekeys.append((row.id, rekey))
            after = rows[-1].id
        if self.write:
            change.rekeyed = store.rekey_events(self.conn, task_id, rekeys)
        else:
            change.rekeyed = len(rekeys)

    def _event(self, row: Any, change: TaskChange) -> str | None:
        """Mask one event row; its new identity when its key must change."""
        payload = store.exact(row.payload, row.payload_raw)
        extra = store.exact(row.extra, row.extra_raw)
        event = TaskEvent(row.name, payload, row.event_id, row.timestamp, extra)
        masked = self.masker.event(event)
        if masked is event or masked.masked is None:
            return None
        change.events += 1
        change.fired.update(masked.masked)
        if self.write:
            typed, raw = column_values(masked.payload, self.dialect)
            extra_typed, extra_raw = column_values(masked.extra, self.dialect)
            values = {
                "payload": typed,
                "payload_raw": raw,
                "extra": extra_typed,
                "extra_raw": extra_raw,
                "masked_rules": _union(row.masked_rules, masked.masked, self.masker),
            }
            store.update_event(self.conn, row.id, values)
        if row.event_id is None and masked.identity != event.identity:
            return masked.identity
        return None

    def _artifact(self, row: Any, change: TaskChange) -> None:
        values = {}
        for name in ("source_url", "last_error"):
            text = getattr(row, name)
            if text and (masked := self.masker.text(text, change.fired)) is not text:
                values[name] = masked
        if values:
            change.artifacts += 1
            if self.write:
                store.update_artifact(self.conn, row.task_id, row.kind, values)


def _union(stored: Any, fired: Sequence[str], masker: Masker) -> list[str] | None:
    """The masked_rules column after this run: the rules recorded before and those that
    fired now."""
    names = {name for name in stored or () if isinstance(name, str)} | set(fired)
    known = [name for name in masker.fired(names & set(masker.names))]
    return known + sorted(names - set(known)) or None


# --- the run ---------------------------------------------------------------------------


def dry_run(db: Database, masker: Masker, echo: Callable[[str], None]) -> MaskOutcome:
    """What ``--apply`` would change, read in one read-only transaction; changes nothing."""
    outcome = MaskOutcome()
    with db.reading() as conn:
        after: str | None = None
        while rows := store.task_batch(conn, after, BATCH_TASKS):
            texts = store.artifact_texts(conn, [row.id for row in rows])
            masking = TaskMasking(conn, masker, write=False)
            for row in rows:
                change = masking.run(row, texts.get(row.id, []))
                if change.changed:
                    outcome.add(change)
                    echo(change.describe(masker))
            after = rows[-1].id
        outcome.runs = mask_run_messages(conn, masker, write=False)
    return outcome


def mask_run_messages(conn: Connection, masker: Masker, *, write: bool) -> int:
    """Mask the messages of finished runs (``sync_runs``); returns how many change."""
    changed, after = 0, None
    while rows := store.run_messages(conn, after, BATCH_TASKS):
        for row in rows:
            message = masker.text(row.message)
            if message is not row.message:
                changed += 1
                if write:
                    store.update_run_message(conn, row.id, message)
        after = rows[-1].id
    return changed


def apply(
    db: Database,
    masker: Masker,
    *,
    actor: str,
    reason: str,
    echo: Callable[[str], None],
) -> MaskOutcome:
    """Rewrite the archive with the rules (see the module docstring)."""
    outcome = MaskOutcome()
    lock = RunLock(db, "mask")
    lock.acquire()
    try:
        left: list[str] = []
        after: str | None = None
        while True:
            with db.reading() as conn:
                ids = [row.id for row in store.task_batch(conn, after, BATCH_TASKS)]
            if not ids:
                break
            left += _apply_batch(db, lock, masker, ids, (actor, reason), outcome, echo)
            after = ids[-1]
        for _ in range(LEASE_ROUNDS):
            if not left:
                break
            time.sleep(LEASE_WAIT_S)
            left = _apply_batch(db, lock, masker, left, (actor, reason), outcome, echo)
        outcome.left = left
        with db.erasing() as conn:
            outcome.runs = mask_run_messages(conn, masker, write=True)
    finally:
        lock.release()
    outcome.checkpointed = db.checkpoint()
    return outcome


def _apply_batch(
    db: Database,
    lock: RunLock,
    masker: Masker,
    ids: list[str],
    who: tuple[str, str],
    outcome: MaskOutcome,
    echo: Callable[[str], None],
) -> list[str]:
    """Mask the tasks of one batch that this run can lease, in one secure-delete
    transaction; returns the ids another run holds."""
    with db.transaction() as conn:
        claimed = lock.claim(conn, ids)
    log.debug("mask --apply: %d of %d task(s) of this batch leased", len(claimed), len(ids))
    got = set(claimed)
    changes: list[TaskChange] = []
    with db.erasing() as conn:
        rows = store.task_batch_of(conn, claimed)
        texts = store.artifact_texts(conn, claimed)
        masking = TaskMasking(conn, masker, write=True)
        now = utcnow()
        for row in rows:
            change = masking.run(row, texts.get(row.id, []))
            if not change.changed:
                continue
            audit = Audit(who[0], who[1], "mask", rules=masker.fired(change.fired))
            record_erasure(
                conn, row.id, Removed(events=change.events, scope=["mask"]), audit, now=now
            )
            changes.append(change)
        lock.release_tasks(conn, claimed)
    for change in changes:  # committed: now it may be said
        outcome.add(change)
        echo(change.describe(masker))
    return [task_id for task_id in ids if task_id not in got]


# --- what the command prints --------------------------------------------------------------


def describe_rules(masker: Masker) -> list[str]:
    """One line per rule: its name, what it matches, where, and how it replaces. Patterns
    are not shown: one may spell out the very secret it masks (``smooth_api_key``'s is the
    API key itself)."""
    lines = []
    for rule in masker.rules:
        what = ["built-in"] if rule.origin.startswith("builtin:") else []
        if rule.pattern is not None and not what:
            what.append("a pattern")
        if rule.path is not None:
            what.append(f"path {shown(repr(rule.path))}")
        where = rule.where + (f", event {rule.event!r}" if rule.event is not None else "")
        lines.append(
            f"{rule.name}: {' and '.join(what)}; where {where}; replace {rule.replace} "
            f"({rule.origin})"
        )
    return lines


def summary(outcome: MaskOutcome, *, dry_run: bool) -> str:
    counts = (
        f"{outcome.tasks} task(s), {outcome.events} event row(s), "
        f"{outcome.artifacts} task(s) with artifact rows, {outcome.runs} run message(s)"
    )
    if dry_run:
        return f"dry run: the rules would change {counts}; nothing was changed (add --yes)."
    return f"masked {counts}; one erasures row per task changed."


def problems(outcome: MaskOutcome) -> list[str]:
    """Why a run did not finish its job, if it did not (exit 1)."""
    found = []
    if outcome.left:
        shown_ids = ", ".join(shown(task_id) for task_id in outcome.left[:5])
        more = ", ..." if len(outcome.left) > 5 else ""
        found.append(
            f"{len(outcome.left)} task(s) stayed leased by another run and were left as they "
            f"are ({shown_ids}{more}); run `archiver mask --apply --yes` again when it is done."
        )
    if not outcome.checkpointed:
        found.append(
            "the SQLite WAL could not be truncated (another process holds it open), so page "
            "images of the old content may stay in it until its next checkpoint; run "
            "`archiver mask --apply --yes` again when the archive is idle."
        )
    return found
