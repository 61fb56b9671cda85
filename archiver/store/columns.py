"""Every column the archiver fills from the API, declared once.

A ``tasks`` row's API columns and a ``task_events`` row's columns are listed here, each
with where its value comes from, its kind and its lossless ``*_raw`` companion. Every
statement that writes them (the listing's INSERT, the poll's UPDATE, the events' upserts
on both databases) is built from these declarations, so a column cannot be written by
one statement and forgotten by another. Adding a task column means: a field of
:data:`TASK_FIELDS`, its ``Column`` in :mod:`archiver.store.schema` and a migration
(docs/architecture.md, "Where each kind of change goes").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import Table, bindparam, func
from sqlalchemy.sql.elements import ColumnElement

from archiver.jsonvalues import column_values, text_column_value
from archiver.models import TaskInfo, strip_query
from archiver.store.schema import tasks
from archiver.timestamps import sqlite_utc_text, to_utc


class Kind(Enum):
    """How a value is checked and bound."""

    TEXT = "text"
    JSON = "json"
    INT = "int"
    TIME = "time"


# --- tasks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskField:
    """A column of ``tasks`` whose value comes from the API's task payload."""

    name: str
    kind: Kind
    #: Where the value comes from in the API model.
    source: Callable[[TaskInfo], Any]
    #: The companion column holding the JSON text as sent where the typed one cannot.
    raw: str | None = None
    #: A payload without this value (None) leaves the stored one (created_at): the
    #: listing and Get Task both send it, but a malformed item tracked by id does not.
    keep_when_missing: bool = False


#: The API columns of ``tasks``. The first is the payload itself; every other field is a
#: part of it, so when the payload is exact in the dialect's typed column so is each
#: field, and only otherwise is each field checked on its own (:meth:`TaskColumns.values`).
TASK_FIELDS: tuple[TaskField, ...] = (
    TaskField("payload", Kind.JSON, TaskInfo.payload_without_events, raw="payload_raw"),
    TaskField("status", Kind.TEXT, lambda task: task.status),
    TaskField("output", Kind.JSON, lambda task: task.output, raw="output_raw"),
    TaskField("credits_used", Kind.INT, lambda task: task.credits_used),
    TaskField("device", Kind.TEXT, lambda task: task.device),
    TaskField("live_url", Kind.TEXT, lambda task: strip_query(task.live_url)),
    TaskField("recording_url", Kind.TEXT, lambda task: strip_query(task.recording_url)),
    TaskField("downloads_url", Kind.TEXT, lambda task: strip_query(task.downloads_url)),
    TaskField("created_at", Kind.INT, lambda task: task.created_at, keep_when_missing=True),
    TaskField(
        "created_at_utc",
        Kind.TIME,
        lambda task: to_utc(task.created_at),
        keep_when_missing=True,
    ),
    # Not from the API: which masking rules fired on this payload, as a poll last read it.
    TaskField("masked_rules", Kind.JSON, lambda task: list(task.masked_rules) or None),
)


@dataclass(frozen=True)
class TaskColumns:
    """The API columns of a ``tasks`` table, and the pieces of every statement that
    writes them."""

    table: Table
    fields: tuple[TaskField, ...]

    @property
    def names(self) -> list[str]:
        """Every column these fields write, raw companions included."""
        names: list[str] = []
        for field in self.fields:
            names += [field.name] if field.raw is None else [field.name, field.raw]
        return names

    def values(self, task: TaskInfo, dialect: str) -> dict[str, Any]:
        """Each column's value for this payload, as ``dialect`` can store it exactly (the
        text as sent in the raw companion where the typed column cannot hold it)."""
        first, *rest = self.fields
        payload, payload_raw = column_values(first.source(task), dialect)
        row: dict[str, Any] = {first.name: payload}
        if first.raw is not None:
            row[first.raw] = payload_raw
        exact = payload_raw is None
        for field in rest:
            value = field.source(task)
            if field.kind is Kind.JSON:
                typed, raw = (value, None) if exact else column_values(value, dialect)
                row[field.name] = typed
                if field.raw is not None:
                    row[field.raw] = raw
            elif field.kind is Kind.TEXT and not exact:
                # Text the database cannot hold (a lone surrogate in `device`, say) is
                # replaced here; payload_raw holds every one of these fields exactly.
                row[field.name] = text_column_value(value, dialect)
            else:
                row[field.name] = value
        return row

    def update_assignments(self, prefix: str) -> dict[str, ColumnElement[Any]]:
        """``column = :prefix<column>`` for an UPDATE that stores a poll; a field kept
        when missing keeps the stored value when the parameter is NULL."""
        assignments: dict[str, ColumnElement[Any]] = {}
        for name in self.names:
            column = self.table.c[name]
            param = bindparam(f"{prefix}{name}", type_=column.type)
            keep = any(f.name == name and f.keep_when_missing for f in self.fields)
            assignments[name] = func.coalesce(param, column) if keep else param
        return assignments


#: The archive's own tasks table with its API fields: what the store writes through.
TASK_COLUMNS = TaskColumns(tasks, TASK_FIELDS)


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EventColumn:
    """A column of ``task_events`` as the hot insert writes it."""

    name: str
    kind: Kind
    #: A re-read of a stored event overwrites it (the event's latest payload wins).
    latest: bool = False
    #: A re-read writes only when this column's value changed.
    compared: bool = False
    #: The UTC time of this raw timestamp column: SQLite computes it in SQL (in C, with
    #: the GIL released) instead of taking a parameter; psycopg takes a datetime.
    utc_of: str | None = None

    @property
    def quoted(self) -> str:
        return '"timestamp"' if self.name == "timestamp" else self.name


#: The columns of ``task_events`` in the order of the rows :func:`insert_events` builds
#: (events.py); on SQLite those with ``utc_of`` are computed by SQL, not sent, so they
#: come last.
EVENT_COLUMNS: tuple[EventColumn, ...] = (
    EventColumn("task_id", Kind.TEXT),
    EventColumn("event_key", Kind.TEXT),
    EventColumn("event_id", Kind.TEXT),
    EventColumn("name", Kind.TEXT),
    EventColumn("payload", Kind.JSON, latest=True, compared=True),
    EventColumn("payload_raw", Kind.TEXT, latest=True),
    EventColumn("timestamp", Kind.INT),
    EventColumn("archived_at", Kind.TIME),
    EventColumn("extra", Kind.JSON, latest=True, compared=True),
    EventColumn("extra_raw", Kind.TEXT, latest=True),
    EventColumn("masked_rules", Kind.JSON, latest=True),
    EventColumn("timestamp_utc", Kind.TIME, utc_of="timestamp"),
)

_PG_STAGING_TYPES = {Kind.TEXT: "text", Kind.JSON: "text", Kind.INT: "bigint"}


def _names(columns: tuple[EventColumn, ...]) -> str:
    return ", ".join(column.quoted for column in columns)


def events_conflict_clause(dialect: str) -> str:
    """What a re-read of a stored event does: only a changed payload (or extra fields)
    writes, so a plain re-read stays a no-op."""
    differs = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    sets = ", ".join(f"{c.name} = excluded.{c.name}" for c in EVENT_COLUMNS if c.latest)
    changed = " OR ".join(
        f"task_events.{c.name} {differs} excluded.{c.name}" for c in EVENT_COLUMNS if c.compared
    )
    return f"ON CONFLICT (task_id, event_key) DO UPDATE SET {sets} WHERE {changed}"


def sqlite_insert_events() -> str:
    """SQLite's events INSERT, one row per executemany step."""
    number = {c.name: f"?{n}" for n, c in enumerate(EVENT_COLUMNS, 1)}
    values = ", ".join(
        sqlite_utc_text(number[c.utc_of]) if c.utc_of else number[c.name] for c in EVENT_COLUMNS
    )
    return (
        f"INSERT INTO task_events ({_names(EVENT_COLUMNS)}) VALUES ({values}) "
        + events_conflict_clause("sqlite")
    )


def pg_staging_table(name: str) -> str:
    """The session's temporary table the COPY writes into (PostgreSQL), empty at each
    commit, in the column order of the insert's rows."""
    columns = ", ".join(
        f"{c.quoted} {_PG_STAGING_TYPES.get(c.kind, 'timestamptz')}" for c in EVENT_COLUMNS
    )
    return f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ({columns}) ON COMMIT DELETE ROWS"


def pg_move_staged_events(name: str) -> str:
    """Move the staged rows into ``task_events`` (PostgreSQL), emptying the staging table."""
    select = ", ".join(
        f"{c.quoted}::jsonb" if c.kind is Kind.JSON else c.quoted for c in EVENT_COLUMNS
    )
    return (
        f"WITH incoming AS (DELETE FROM {name} RETURNING *) "
        f"INSERT INTO task_events ({_names(EVENT_COLUMNS)}) SELECT {select} FROM incoming "
        + events_conflict_clause("postgresql")
    )


def pg_insert_events() -> str:
    """PostgreSQL's row-by-row events INSERT (a role that may not create the COPY table)."""
    values = ", ".join("%s::jsonb" if c.kind is Kind.JSON else "%s" for c in EVENT_COLUMNS)
    return (
        f"INSERT INTO task_events ({_names(EVENT_COLUMNS)}) VALUES ({values}) "
        + events_conflict_clause("postgresql")
    )
