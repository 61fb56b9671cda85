"""Events: the hot insert of a sync, exactly once per ``(task_id, event_key)``.

The row layout and every statement come from :data:`archiver.store.columns.EVENT_COLUMNS`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from archiver.jsonvalues import column_texts, json_column
from archiver.models import KeyedEvent
from archiver.store.columns import (
    pg_insert_events,
    pg_move_staged_events,
    pg_staging_table,
    sqlite_insert_events,
)
from archiver.store.errors import db_message, driver_error
from archiver.timestamps import to_utc

log = logging.getLogger(__name__)


def insert_events(
    conn: Connection,
    batches: Sequence[tuple[str, Sequence[KeyedEvent]]],
    now: datetime,
) -> None:
    """Store the events not stored yet, for several tasks at once; a re-read is a no-op,
    and a re-read event whose payload changed (an event with an id, filled in later)
    updates its row to the latest payload.

    The hottest statement of a sync: its rows go straight to the driver as plain tuples
    (SQLite: executemany; PostgreSQL: COPY), each value already in the form
    SQLAlchemy's column types would bind (JSON as canonical text, times as the dialect
    stores them), skipping per-row parameter processing, which cost more than the
    database's own work.
    """
    dialect = conn.dialect.name
    sqlite = dialect == "sqlite"
    archived_at = sqlite_time(now) if sqlite else now
    column = json_column(dialect)
    rows: dict[tuple[str, str], tuple[Any, ...]] = {}
    for task_id, events in batches:
        for key, ev in events:
            # The last read of a key wins: the sweep after a cursor read is the newest.
            payload, payload_raw = column_texts(ev.payload, column)
            extra, extra_raw = column_texts(ev.extra, column)
            # In the order of columns.EVENT_COLUMNS (timestamp_utc last, psycopg only).
            row = (
                task_id,
                key,
                ev.id,
                ev.name,
                payload,
                payload_raw,
                ev.timestamp,
                archived_at,
                extra,
                extra_raw,
                None if ev.masked is None else _rule_names(ev.masked),
            )
            # SQLite computes timestamp_utc from the timestamp itself, in C with the GIL
            # released (~1.7 us per event less on the event loop's GIL); psycopg takes a
            # datetime.
            rows[(task_id, key)] = row if sqlite else (*row, to_utc(ev.timestamp))
    if not rows:
        return
    if sqlite:
        conn.exec_driver_sql(_SQLITE_INSERT_EVENTS, list(rows.values()))
        return
    if not _can_copy(conn):
        conn.exec_driver_sql(_PG_INSERT_EVENTS, list(rows.values()))
        return
    # PostgreSQL: COPY into a temporary table, then one INSERT ... SELECT with the same
    # ON CONFLICT. psycopg's executemany spends ~17 us of client CPU per row in Python;
    # COPY's rows are encoded in C (100k rows: 1.8 -> 0.8 s of client CPU).
    conn.exec_driver_sql(_PG_INCOMING_TABLE)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(_PG_COPY_INCOMING) as copy:
            for row in rows.values():
                copy.write_row(row)
    except Exception as exc:  # psycopg's own error: wrapped as SQLAlchemy would
        raise driver_error(conn, _PG_COPY_INCOMING, exc) from exc
    finally:
        cursor.close()
    conn.exec_driver_sql(_PG_MOVE_INCOMING)


#: Per connection (``Connection.info``): whether this role may create the temporary table
#: the COPY goes through (the TEMP privilege, PUBLIC's by default; a role without it keeps
#: the executemany insert).
_COPY_OK = "archiver_events_by_copy"


def _can_copy(conn: Connection) -> bool:
    if conn.dialect.driver != "psycopg":
        return False  # another driver named in the URL (psycopg2 has no cursor.copy)
    allowed = conn.info.get(_COPY_OK)
    if allowed is None:
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(_PG_INCOMING_TABLE)
            allowed = True
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
                raise
            log.warning(
                "this database role may not create temporary tables: events are inserted "
                "row by row (slower); GRANT TEMP ON DATABASE to the archiver's role to speed "
                "it up (%s)",
                db_message(exc),
            )
            allowed = False
        conn.info[_COPY_OK] = allowed
    return bool(allowed)


#: The COPY path of PostgreSQL (see insert_events): a temporary table per session, empty
#: at each commit, created in the transaction that uses it (so a pooler handing out other
#: server sessions, or a rolled-back creation, cannot leave it missing); the INSERT empties
#: it as it moves the rows.
_PG_STAGING = "archiver_incoming_events"
_PG_INCOMING_TABLE = pg_staging_table(_PG_STAGING)
_PG_COPY_INCOMING = f"COPY {_PG_STAGING} FROM STDIN"
_PG_MOVE_INCOMING = pg_move_staged_events(_PG_STAGING)
_PG_INSERT_EVENTS = pg_insert_events()
#: One row per executemany step. Multi-row statements (up to 256 rows, one GIL release
#: per chunk instead of per event) were measured and dropped: the writer spent less time
#: in the insert, but peak RSS grew with the archive's size (100k tasks: 96-102 MB against
#: 86 MB), which docs/performance.md explains.
_SQLITE_INSERT_EVENTS = sqlite_insert_events()


def _rule_names(names: tuple[str, ...]) -> str:
    """The masked_rules column's JSON text (an array of rule names)."""
    return orjson.dumps(list(names)).decode()


def sqlite_time(value: datetime) -> str:
    """A UTC datetime as SQLAlchemy's SQLite DateTime stores it (psycopg takes datetimes
    as they are): isoformat is C code, and its first 26 characters are exactly that format
    (tests/test_db.py compares the two). Every time here is UTC."""
    return value.isoformat(" ", "microseconds")[:26]
