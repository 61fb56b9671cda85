"""The read queries behind `archiver serve`'s pages. Nothing here writes.

The task list pages with a *keyset* (the sort value and id of the last row shown), not an
OFFSET: a page is one range scan of ``ix_tasks_created_at_utc_id`` or
``ix_tasks_credits_used_id`` however deep it is, and rows inserted by a running sync do
not shift later pages. Rows without a sort value (a task known only by id has no creation
time and no credits) come after all others, ordered by id; the keyset says which of the
two segments a page continues in.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    and_,
    cast,
    func,
    or_,
    select,
    tuple_,
)

from archiver.jsonvalues import loads_json
from archiver.models import TERMINAL_STATUSES
from archiver.report import usd
from archiver.stats import STORED_COUNTERS, RunResult, RunStats
from archiver.store.locks import gone_runs
from archiver.store.schema import (
    artifact_files,
    artifacts,
    erasures,
    sync_runs,
    task_events,
    tasks,
)
from archiver.timestamps import aware

PAGE_SIZE = 50
SORTS = {"created": tasks.c.created_at_utc, "credits": tasks.c.credits_used}
#: Events a task page shows at a time (keyset pages: the next ones are a link away).
EVENTS_PAGE = 200
#: Events read from the database at a time while a task page streams out: a page of
#: large payloads is never held in memory at once.
EVENTS_BATCH = 4
#: Zip members a task page lists (the table artifact_files holds them all).
MAX_FILES_SHOWN = 1_000


@dataclass(frozen=True)
class TaskFilter:
    """The task list's filters; each is applied in SQL."""

    status: str | None = None
    device: str | None = None
    since: date | None = None
    until: date | None = None
    text: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.status:
            clauses.append(tasks.c.status == self.status)
        if self.device:
            clauses.append(tasks.c.device == self.device)
        if self.since is not None:
            clauses.append(tasks.c.created_at_utc >= datetime.combine(self.since, time(), UTC))
        if self.until is not None and self.until < date.max:  # the last day has no day after
            end = datetime.combine(self.until + timedelta(days=1), time(), UTC)
            clauses.append(tasks.c.created_at_utc < end)
        if self.text:
            # The output's JSON text (jsonb's text form on PostgreSQL): case-insensitive
            # substring, with LIKE's wildcards taken literally.
            pattern = "%" + _escape_like(self.text) + "%"
            clauses.append(cast(tasks.c.output, String).ilike(pattern, escape="\\"))
        return clauses


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


#: The integers a keyset may hold: what SQLite's INTEGER and PostgreSQL's BIGINT take.
_SQL_INTS = range(-(2**63), 2**63)


def _pack(value: Any, key: Any) -> str:
    if isinstance(value, datetime):
        value = aware(value).isoformat()  # type: ignore[union-attr]
    raw = json.dumps([value, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unpack(token: str) -> tuple[Any, Any]:
    """The pair a token holds; ValueError (or RecursionError) when it holds none."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    found = loads_json(raw)  # no depth can overflow the stack
    if not isinstance(found, list) or len(found) != 2:
        raise ValueError("a page link holds a pair")
    return found[0], found[1]


def _sql_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value not in _SQL_INTS:
        raise ValueError("not an integer the database takes")
    return value


def _stamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("a time is text")
    return aware(datetime.fromisoformat(value))


def encode_cursor(value: Any, task_id: str) -> str:
    """An opaque, URL-safe keyset: the last row's sort value and id."""
    return _pack(value, task_id)


def decode_cursor(token: str, sort: str) -> tuple[Any, str]:
    """The keyset back; ValueError when the token was not made by :func:`encode_cursor`."""
    value, task_id = _unpack(token)
    if not isinstance(task_id, str):
        raise ValueError("cursor id is not text")
    if value is not None:
        value = _stamp(value) if sort == "created" else _sql_int(value)
    return value, task_id


def encode_event_cursor(event: Event) -> str:
    """Where the next page of a task's events starts: after this event."""
    return _pack(event.timestamp_utc, event.id)


def decode_event_cursor(token: str) -> tuple[datetime | None, int]:
    """:func:`encode_event_cursor`'s keyset back; ValueError when it is not one."""
    stamp, event_id = _unpack(token)
    return _stamp(stamp), _sql_int(event_id)


@dataclass
class TaskRow:
    id: str
    status: str | None
    device: str | None
    created_at_utc: datetime | None
    credits_used: int | None
    duration_s: float | None
    events: int
    recording_state: str | None
    downloads_state: str | None

    @property
    def usd(self) -> Decimal | None:
        return usd(self.credits_used)


@dataclass
class TaskPage:
    rows: list[TaskRow]
    next_cursor: str | None
    total: int
    total_credits: int

    @property
    def total_usd(self) -> Decimal:
        return Decimal(self.total_credits) / 100


def _page_query(key: Any, filters: list[ColumnElement[bool]]) -> Select[Any]:
    return (
        select(tasks.c.id, key.label("key")).where(*filters).order_by(key.desc(), tasks.c.id.desc())
    )


def task_page(
    conn: Connection,
    flt: TaskFilter,
    *,
    sort: str = "created",
    cursor: tuple[Any, str] | None = None,
    limit: int = PAGE_SIZE,
) -> TaskPage:
    """One page of the task list (newest or most expensive first) and the filter's totals."""
    key = SORTS[sort]
    where = flt.where()
    found: list[tuple[str, Any]] = []
    if cursor is None or cursor[0] is not None:
        query = _page_query(key, [*where, key.is_not(None)])
        if cursor is not None:
            query = query.where(tuple_(key, tasks.c.id) < tuple_(cursor[0], cursor[1]))
        found = [(r.id, r.key) for r in conn.execute(query.limit(limit + 1))]
    if len(found) <= limit:
        # The tail: rows without a sort value, by id.
        query = _page_query(tasks.c.id, [*where, key.is_(None)])
        if cursor is not None and cursor[0] is None:
            query = query.where(tasks.c.id < cursor[1])
        tail = conn.execute(query.limit(limit + 1 - len(found)))
        found += [(r.id, None) for r in tail]
    next_cursor = None
    if len(found) > limit:
        found = found[:limit]
        next_cursor = encode_cursor(found[-1][1], found[-1][0])
    ids = [task_id for task_id, _ in found]
    total, credits = conn.execute(
        select(func.count(), func.coalesce(func.sum(tasks.c.credits_used), 0)).where(*where)
    ).one()
    return TaskPage(
        rows=summaries(conn, ids), next_cursor=next_cursor, total=total, total_credits=credits
    )


def summaries(conn: Connection, ids: list[str]) -> list[TaskRow]:
    """The list's columns for these tasks, in the given order, by the rules of the
    ``task_summary`` view (docs/analysts.md; a test holds them equal). The view itself is
    not queried: SQLite materializes its per-task event aggregate over *all* events
    before filtering, which costs a full scan of ``task_events`` per page. Here each
    task's events are counted through the ``(task_id, ...)`` index instead."""
    if not ids:
        return []
    ev = task_events
    rec, dl = artifacts.alias("rec"), artifacts.alias("dl")
    events = select(func.count()).where(ev.c.task_id == tasks.c.id).scalar_subquery()
    last = select(func.max(ev.c.timestamp_utc)).where(ev.c.task_id == tasks.c.id).scalar_subquery()
    query = (
        select(
            tasks.c.id,
            tasks.c.status,
            tasks.c.device,
            tasks.c.created_at_utc,
            tasks.c.credits_used,
            events.label("events"),
            last.label("last_event_utc"),
            rec.c.state.label("recording_state"),
            dl.c.state.label("downloads_state"),
        )
        .select_from(
            tasks.outerjoin(
                rec, and_(rec.c.task_id == tasks.c.id, rec.c.kind == "recording")
            ).outerjoin(dl, and_(dl.c.task_id == tasks.c.id, dl.c.kind == "downloads"))
        )
        .where(tasks.c.id.in_(ids))
    )
    by_id = {}
    for row in conn.execute(query):
        created = aware(row.created_at_utc)
        last_event = aware(_as_datetime(row.last_event_utc))
        by_id[row.id] = TaskRow(
            id=row.id,
            status=row.status,
            device=row.device,
            created_at_utc=created,
            credits_used=row.credits_used,
            duration_s=duration_s(row.status, created, last_event),
            events=int(row.events or 0),
            recording_state=row.recording_state,
            downloads_state=row.downloads_state,
        )
    return [by_id[task_id] for task_id in ids if task_id in by_id]


def duration_s(status: str | None, created: datetime | None, last: datetime | None) -> float | None:
    """task_summary.duration_s: creation to last event, to the millisecond, for finished
    tasks with a timestamped event; None otherwise."""
    if status not in TERMINAL_STATUSES or created is None or last is None:
        return None
    return round((last - created).total_seconds(), 3)


def _as_datetime(value: Any) -> datetime | None:
    # An aggregate over SQLite's text timestamps can come back as the stored text.
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def choices(conn: Connection) -> dict[str, list[str]]:
    """The statuses and devices present, for the filter menus."""
    return {
        name: sorted(v for v in conn.scalars(select(column).distinct()) if v is not None)
        for name, column in (("status", tasks.c.status), ("device", tasks.c.device))
    }


# --- one task ------------------------------------------------------------------------


@dataclass
class Event:
    #: task_events.id: the row, for its keyset and its JSON download.
    id: int
    name: str
    timestamp_utc: datetime | None
    offset_s: float | None
    payload: Any
    #: The payload's JSON text as sent when the typed column cannot hold it exactly.
    payload_raw: str | None = None
    #: The event's fields beyond name/payload/id/timestamp (and their exact text).
    extra: Any = None
    extra_raw: str | None = None


@dataclass
class Artifact:
    kind: str
    state: str
    content_type: str | None
    size_bytes: int | None
    sha256: str | None
    fetched_at: datetime | None
    attempts: int
    last_error: str | None
    pending_since: datetime | None
    next_attempt_at: datetime | None
    pruned_at: datetime | None = None


@dataclass
class TaskDetail:
    row: Any
    summary: TaskRow | None
    events: list[Event]
    events_total: int
    artifacts: dict[str, Artifact]
    files: list[Any] = field(default_factory=list)
    files_total: int = 0
    #: The task's rows in ``erasures`` (forget, prune, mask), newest first.
    removals: list[Any] = field(default_factory=list)


def task_detail(conn: Connection, task_id: str) -> TaskDetail | None:
    """A task's row, counts, artifacts and zip members (the first MAX_FILES_SHOWN); its
    events are read a batch at a time by :func:`event_batch`."""
    row = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
    if row is None:
        return None
    total = conn.scalar(select(func.count()).where(task_events.c.task_id == task_id)) or 0
    found = {
        a.kind: Artifact(
            kind=a.kind,
            state=a.state,
            content_type=a.content_type,
            size_bytes=a.size_bytes,
            sha256=a.sha256,
            fetched_at=aware(a.fetched_at),
            pruned_at=aware(a.pruned_at),
            attempts=a.attempts,
            last_error=a.last_error,
            pending_since=aware(a.pending_since),
            next_attempt_at=aware(a.next_attempt_at),
        )
        for a in conn.execute(select(artifacts).where(artifacts.c.task_id == task_id))
    }
    in_task = artifact_files.c.task_id == task_id
    files = conn.execute(
        select(artifact_files.c.name, artifact_files.c.size_bytes, artifact_files.c.modified_at)
        .where(in_task)
        .order_by(artifact_files.c.name)
        .limit(MAX_FILES_SHOWN)
    ).all()
    files_total = len(files)
    if files_total == MAX_FILES_SHOWN:
        files_total = conn.scalar(select(func.count()).where(in_task)) or 0
    summary = summaries(conn, [task_id])
    removals = conn.execute(
        select(erasures.c.erased_at, erasures.c.actor, erasures.c.reason, erasures.c.scope)
        .where(erasures.c.task_id == task_id)
        .order_by(erasures.c.erased_at.desc(), erasures.c.id.desc())
    ).all()
    return TaskDetail(
        row,
        summary[0] if summary else None,
        [],
        total,
        found,
        list(files),
        files_total,
        list(removals),
    )


_EVENT_ORDER = (
    task_events.c.timestamp_utc.is_(None),
    task_events.c.timestamp_utc,
    task_events.c.id,
)


def event_batch(
    conn: Connection,
    task_id: str,
    created: datetime | None,
    after: tuple[datetime | None, int] | None,
    limit: int,
) -> list[Event]:
    """Up to ``limit`` of a task's events in timeline order (timestamped first, by time,
    then by row), after the keyset ``after`` (see :func:`encode_event_cursor`)."""
    ev = task_events
    query = select(
        ev.c.id, ev.c.name, ev.c.timestamp_utc, ev.c.payload, ev.c.payload_raw, ev.c.extra,
        ev.c.extra_raw,
    ).where(ev.c.task_id == task_id)  # fmt: skip
    if after is not None:
        stamp, row_id = after
        if stamp is None:
            query = query.where(ev.c.timestamp_utc.is_(None), ev.c.id > row_id)
        else:
            later = tuple_(ev.c.timestamp_utc, ev.c.id) > tuple_(stamp, row_id)
            query = query.where(or_(ev.c.timestamp_utc.is_(None), later))
    events = []
    for row in conn.execute(query.order_by(*_EVENT_ORDER).limit(limit)):
        stamp = aware(row.timestamp_utc)
        offset = (stamp - created).total_seconds() if stamp and created else None
        events.append(
            Event(row.id, row.name, stamp, offset, row.payload, row.payload_raw, row.extra,
                  row.extra_raw)
        )  # fmt: skip
    return events


#: The JSON values a page links to in full: (column, its ``*_raw`` twin) per part.
JSON_PARTS = {
    "output": (tasks.c.output, tasks.c.output_raw),
    "payload": (task_events.c.payload, task_events.c.payload_raw),
    "extra": (task_events.c.extra, task_events.c.extra_raw),
}


def json_value(
    conn: Connection, part: str, task_id: str, event_id: int | None
) -> tuple[Any, str | None] | None:
    """(typed value, exact text or None) of a task's output or an event's payload or
    extra fields; None when there is no such task or event."""
    typed, raw = JSON_PARTS[part]
    query = select(typed, raw)
    if part == "output":
        query = query.where(tasks.c.id == task_id)
    else:
        query = query.where(task_events.c.task_id == task_id, task_events.c.id == event_id)
    row = conn.execute(query).first()
    return None if row is None else (row[0], row[1])


@dataclass(frozen=True)
class StoredBlob:
    blob_url: str
    content_type: str | None


def stored_blob(conn: Connection, task_id: str, kind: str) -> StoredBlob | None:
    """Where a stored artifact's blob is: only ever a URL an ``artifacts`` row points to."""
    row = conn.execute(
        select(artifacts.c.blob_url, artifacts.c.content_type).where(
            artifacts.c.task_id == task_id,
            artifacts.c.kind == kind,
            artifacts.c.state == "stored",
            artifacts.c.blob_url.is_not(None),
        )
    ).first()
    return None if row is None else StoredBlob(row.blob_url, row.content_type)


# --- /metrics ------------------------------------------------------------------------


def last_finished_runs(conn: Connection, commands: Sequence[str]) -> list[RunResult]:
    """The newest finished pass of each command that has one, from its ``sync_runs`` row:
    the counters the row keeps, the others 0. A newer run still recorded ``running``
    whose process is gone counts as that pass, ``crashed``."""
    results = []
    for command in commands:
        newest = (
            select(sync_runs)
            .where(sync_runs.c.command == command)
            .order_by(sync_runs.c.started_at.desc(), sync_runs.c.id.desc())
            .limit(1)
        )
        row = conn.execute(newest).first()
        outcome = row.outcome if row is not None else None
        if row is not None and outcome == "running":
            if gone_runs(conn, [row.run_id]):
                outcome = "crashed"
            else:  # still running: its predecessor is the last pass
                row = conn.execute(newest.where(sync_runs.c.finished_at.is_not(None))).first()
                outcome = row.outcome if row is not None else None
        if row is None or outcome is None:
            continue
        started = aware(row.started_at) or datetime.now(UTC)
        results.append(
            RunResult(
                run_id=row.run_id,
                command=command,
                stats=RunStats(**{name: int(row._mapping[name] or 0) for name in STORED_COUNTERS}),
                outcome=outcome,
                started_at=started,
                # A crashed run's end is not known: it ended some time after it started.
                finished_at=aware(row.finished_at) or started,
            )
        )
    return results
