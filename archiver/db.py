"""Opening the archive database, migrating it, and every query the sync engine runs.

SQLite (the embedded default) runs in WAL mode with a busy timeout and takes its write
lock at BEGIN (``BEGIN IMMEDIATE``), so concurrent archiver processes queue instead of
failing on a lock upgrade, and analysts' readers never block a sync. PostgreSQL runs at
READ COMMITTED; every statement that races another process is a single conditional
UPDATE or an ``INSERT ... ON CONFLICT``, which is atomic there.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Engine,
    Integer,
    and_,
    bindparam,
    case,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    OperationalError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.pool import QueuePool

from archiver.exceptions import ConfigError, DataRefused, LeaseLost, StorageError
from archiver.models import KeyedEvent, TaskInfo, dumps_json, strip_query
from archiver.schema import UtcDateTime, sync_runs, sync_state, task_events, tasks
from archiver.stats import STORED_COUNTERS
from archiver.timestamps import to_utc

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: 404s in a row, each in a pass that proved the API URL right, before a task is gone.
GONE_AFTER_NOT_FOUND = 3
POSTGRES_LOCK_TIMEOUT_MS = 30_000
#: Connection.info flag: the transaction only reads (SQLite: deferred BEGIN, no write lock).
_READ_ONLY = "archiver_read_only"
SUPPORTED_SCHEMES = ("sqlite:///PATH", "postgresql://USER@HOST/DB")


def normalize_database_url(url: str) -> str:
    """Accept the URL spellings people use and pick the driver we ship (psycopg 3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_db_engine(url: str, *, read_only: bool = False) -> Engine:
    """An Engine for ``url``; SQLite files are created owner-only, with WAL and busy timeout.

    ``read_only``: the connection itself refuses writes (SQLite ``mode=ro``, PostgreSQL
    ``default_transaction_read_only``) and a missing SQLite file is an error, not created.
    """
    url = normalize_database_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"database URL {url!r} is not a URL: expected one of {', '.join(SUPPORTED_SCHEMES)} "
            "(set --database-url or ARCHIVER_DATABASE_URL)."
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if read_only:
            return _sqlite_read_only_engine(url, parsed.database)
        return _sqlite_engine(url, parsed.database)
    if backend == "postgresql":
        try:
            # executemany runs in psycopg's pipeline mode; insertmanyvalues would re-render
            # and re-parse one huge INSERT per batch size instead.
            return create_engine(
                url,
                pool_pre_ping=True,
                json_serializer=dumps_json,
                use_insertmanyvalues=False,
                # A row lock held elsewhere (an analyst's SELECT ... FOR UPDATE, a session
                # idle in a transaction) fails the statement instead of hanging the pass.
                connect_args={
                    "options": f"-c lock_timeout={POSTGRES_LOCK_TIMEOUT_MS}"
                    + (" -c default_transaction_read_only=on" if read_only else "")
                },
            )
        except ImportError:
            raise ConfigError(
                "PostgreSQL support is not installed: pip install 'smooth-archiver[postgres]'."
            ) from None
    raise ConfigError(
        f"database URL scheme {parsed.drivername!r} is not supported: "
        f"use one of {', '.join(SUPPORTED_SCHEMES)}."
    )


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:":
        path = Path(database).expanduser()
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created owner-only before SQLite opens it; SQLite gives -wal/-shm the same mode.
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        except OSError as exc:
            raise StorageError(
                f"cannot create the SQLite database {str(path)!r}: {exc.strerror}; "
                "check the directory exists and is writable, or set ARCHIVER_HOME."
            ) from None
    engine = create_engine(url, json_serializer=dumps_json)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        _sqlite_pragmas(
            dbapi_connection, "PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL"
        )

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the lock up front; readers (status, report) take a snapshot only.
        conn.exec_driver_sql("BEGIN" if conn.info.get(_READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def _sqlite_pragmas(dbapi_connection: Any, *pragmas: str) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    for pragma in pragmas:
        cursor.execute(pragma)
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_read_only_engine(url: str, database: str | None) -> Engine:
    """SQLite opened with ``mode=ro``: writes fail in SQLite itself, nothing is created."""
    if not database or database == ":memory:":
        raise ConfigError(f"database URL {url!r} names no SQLite file to read.")
    path = Path(database).expanduser().absolute()
    if not path.is_file():
        raise ConfigError(
            f"the SQLite archive {str(path)!r} does not exist: check --database-url or "
            "ARCHIVER_DATABASE_URL (run `archiver sync` or `archiver demo` to create one)."
        )
    uri = "file:" + quote(path.as_posix()) + "?mode=ro"

    def connect() -> Any:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    # A creator with a plain "sqlite://" URL would get SQLite's in-memory pool; a file wants
    # an ordinary pool of connections.
    engine = create_engine("sqlite://", creator=connect, poolclass=QueuePool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_connection)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")  # deferred: a snapshot, never the write lock

    return engine


def migrations_location() -> str:
    """Where the Alembic scripts are: the installed copy inside the package."""
    return str(resources.files("archiver._migrations"))


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", migrations_location())
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        conn.info[_READ_ONLY] = True
        try:
            return MigrationContext.configure(conn).get_current_revision()
        finally:
            conn.info.pop(_READ_ONLY, None)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` (default: head)."""
    from alembic import command

    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"migrating the database failed: {db_message(exc)}") from None


def ensure_current(engine: Engine) -> None:
    """Upgrade a database that is behind the code; a no-op when it is at head."""
    if current_revision(engine) != head_revision():
        upgrade(engine)


def db_message(exc: BaseException) -> str:
    """The driver's first line; a full disk also says what to do about it."""
    orig = getattr(exc, "orig", None)
    message = str(orig or exc).splitlines()[0]
    code = getattr(orig, "sqlite_errorcode", None) or getattr(orig, "sqlstate", None)
    # SQLITE_FULL (13), PostgreSQL's disk_full (53100), or the OS's ENOSPC text.
    full = ("disk is full", "No space left", "could not write init file")
    if code in (13, "53100") or any(text in message for text in full):
        message += (
            "; free space on the disk holding the database, then run again (the archive "
            "is consistent and the next pass resumes)"
        )
    return message


#: Errors raised while encoding values for the database (nesting too deep, surrogates...).
VALUE_ERRORS = (ValueError, TypeError, RecursionError, OverflowError)


def wrap_error(exc: BaseException) -> StorageError:
    """A driver or encoding error as the archiver's own: DataRefused when the values
    themselves were refused (that task's problem), StorageError otherwise."""
    refused = isinstance(exc, (DataError, *VALUE_ERRORS)) or (
        isinstance(exc, StatementError) and isinstance(exc.orig, VALUE_ERRORS)
    )
    error: StorageError
    if refused and isinstance(exc, VALUE_ERRORS):
        error = DataRefused(f"cannot store this payload: {type(exc).__name__}: {exc}")
    elif refused:
        error = DataRefused(f"database error: {db_message(exc)}")
    else:
        error = StorageError(f"database error: {db_message(exc)}")
    error.__cause__ = exc
    return error


def dialect_insert(conn: Connection, table: Any) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing``/``do_update``."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class Database:
    """An archive database: an Engine plus the transactions the engine needs."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.url = normalize_database_url(url)
        #: Opened for reading only: never created, migrated or written to.
        self.read_only = read_only
        self.engine = create_db_engine(self.url, read_only=read_only)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def display_url(self) -> str:
        """The URL with any password hidden, for messages and ``status``."""
        return make_url(self.url).render_as_string(hide_password=True)

    def prepare(self) -> None:
        """Connect and bring the schema to head (read-only: check it is there); a clear
        StorageError if that fails."""
        try:
            if self.read_only:
                self._check_readable()
            else:
                ensure_current(self.engine)
        except OperationalError as exc:
            raise StorageError(
                f"cannot open the database {self.display_url()}: {db_message(exc)}; "
                "check the URL, that the server runs, and permissions."
            ) from None

    def _check_readable(self) -> None:
        """A read-only command needs an archive at the schema this version reads."""
        current, head = current_revision(self.engine), head_revision()
        if current is None:
            raise ConfigError(
                f"{self.display_url()} holds no archive (no schema): check --database-url / "
                f"ARCHIVER_DATABASE_URL, or run `archiver sync` to create the archive."
            )
        if current != head:
            raise ConfigError(
                f"the archive {self.display_url()} is at schema revision {current}, this "
                f"archiver reads {head}: run `archiver db upgrade` (or a sync) first."
            )

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction; database errors surface as StorageError (DataRefused when the
        values themselves were refused), and roll the transaction back."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (SQLAlchemyError, *VALUE_ERRORS) as exc:
            raise wrap_error(exc) from exc

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only transaction: one consistent snapshot that never waits for a writer
        (on SQLite it takes no write lock, so it also works on a read-only file)."""
        try:
            with self.engine.connect() as conn:
                conn.info[_READ_ONLY] = True
                try:
                    with conn.begin():
                        yield conn
                finally:
                    conn.info.pop(_READ_ONLY, None)
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {db_message(exc)}") from exc

    def dispose(self) -> None:
        self.engine.dispose()


# --- tasks ---------------------------------------------------------------------------


def _task_columns(task: TaskInfo) -> dict[str, Any]:
    """The columns of ``tasks`` that come straight from an API payload."""
    columns: dict[str, Any] = {
        "status": task.status,
        "output": task.output,
        "credits_used": task.credits_used,
        "device": task.device,
        "live_url": strip_query(task.live_url),
        "recording_url": strip_query(task.recording_url),
        "downloads_url": strip_query(task.downloads_url),
        "payload": task.payload_without_events(),
    }
    if task.created_at is not None:
        columns["created_at"] = task.created_at
        columns["created_at_utc"] = to_utc(task.created_at)
    return columns


def insert_new_tasks(conn: Connection, listed: Sequence[TaskInfo], now: datetime) -> list[str]:
    """Insert the listed tasks not yet known; returns the ids that were new. A listed task
    recorded as gone (e.g. by a pass against a wrong URL) is active again: the API lists it."""
    rows = {
        task.id: {"id": task.id, "first_seen_at": now, **_task_columns(task)} for task in listed
    }
    new = _insert_missing_tasks(conn, rows)
    if len(new) < len(rows):
        fresh = set(new)
        # One more credible 404 buries it again: a task the API lists but answers 404 for
        # costs one request per pass, not three.
        again = [task_id for task_id in rows if task_id not in fresh]
        revive_gone(conn, again, now, not_found=GONE_AFTER_NOT_FOUND - 1)
    return new


def insert_task_stubs(conn: Connection, task_ids: Iterable[str], now: datetime) -> int:
    """Track tasks known only by id (``--task``, ``--ids-file``); returns how many were new."""
    return len(insert_task_stub_ids(conn, task_ids, now))


def insert_task_stub_ids(conn: Connection, task_ids: Iterable[str], now: datetime) -> list[str]:
    """Track tasks known only by id; returns the ids that were new."""
    rows = {task_id: {"id": task_id, "first_seen_at": now} for task_id in task_ids}
    return _insert_missing_tasks(conn, rows)


def delete_stub(conn: Connection, task_id: str, *, owner: str) -> None:
    """Remove a task this run added by id and that was never read (the API does not know
    it): an unknown ``--task`` id leaves no row behind."""
    conn.execute(
        tasks.delete().where(
            tasks.c.id == task_id,
            tasks.c.lease_owner == owner,
            tasks.c.last_polled_at.is_(None),
            tasks.c.full_read_at.is_(None),
        )
    )


def revive_gone(
    conn: Connection, task_ids: Sequence[str] | None, now: datetime, *, not_found: int
) -> int:
    """Put tasks recorded as gone back among the active ones (all of them when ``task_ids``
    is None); ``not_found`` is where their 404 count restarts. Returns how many."""
    query = update(tasks).where(tasks.c.gone_at.is_not(None))
    if task_ids is not None:
        query = query.where(tasks.c.id.in_(list(task_ids)))
    result = conn.execute(
        query.values(gone_at=None, finalized_at=None, next_poll_at=None, not_found_count=not_found)
    )
    return int(result.rowcount or 0)


def _insert_missing_tasks(conn: Connection, rows: dict[str, dict[str, Any]]) -> list[str]:
    """INSERT the rows whose id is not in ``tasks`` yet (ON CONFLICT DO NOTHING covers a
    concurrent insert); returns their ids. Plain executemany, no RETURNING (see
    create_db_engine)."""
    ids = list(rows)
    known: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        known.update(conn.scalars(select(tasks.c.id).where(tasks.c.id.in_(chunk))))
    new = [task_id for task_id in ids if task_id not in known]
    if not new:
        return []
    # Uniform keys per row: executemany needs every row to name the same columns.
    keys = set().union(*(rows[task_id].keys() for task_id in new))
    params = [{key: rows[task_id].get(key) for key in keys} for task_id in new]
    conn.execute(dialect_insert(conn, tasks).on_conflict_do_nothing(index_elements=["id"]), params)
    return new


def due_task_ids(
    conn: Connection, now: datetime, *, only: Sequence[str] | None = None
) -> list[str]:
    """Tasks ``sync`` should poll now: not finalized and not in error back-off."""
    query = (
        select(tasks.c.id)
        .where(tasks.c.finalized_at.is_(None))
        .where((tasks.c.next_poll_at.is_(None)) | (tasks.c.next_poll_at <= now))
        .order_by(tasks.c.created_at.desc(), tasks.c.id)
    )
    if only is not None:
        query = query.where(tasks.c.id.in_(list(only)))
    return list(conn.scalars(query))


def backfill_task_ids(
    conn: Connection, *, since: int | None, only: Sequence[str] | None = None
) -> list[str]:
    """Tasks a backfill still has to read in full: never read from event_t=0, not finalized."""
    query = (
        select(tasks.c.id)
        .where(tasks.c.finalized_at.is_(None))
        .where(tasks.c.full_read_at.is_(None))
        .order_by(tasks.c.created_at.desc(), tasks.c.id)
    )
    if since is not None:
        query = query.where(tasks.c.created_at >= since)
    if only is not None:
        query = query.where(tasks.c.id.in_(list(only)))
    return list(conn.scalars(query))


@dataclass(frozen=True)
class TaskCursor:
    """Where polling a task resumes, and what earlier passes learnt about it."""

    event_t: int
    full_read: bool
    finalized: bool
    error_count: int
    #: The status the last poll stored (None before the first poll).
    status: str | None = None
    #: When a pass first read the task terminal without finalizing it (a confirming read
    #: on a later pass finalizes it), None otherwise.
    terminal_seen_at: datetime | None = None
    #: Whether the archiver ever saw the task waiting, running or in an unknown status.
    seen_active: bool = False
    #: Polls in a row that found a status the archiver does not know.
    unknown_polls: int = 0


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def task_cursors(conn: Connection, task_ids: Sequence[str]) -> dict[str, TaskCursor]:
    """Cursors of many tasks at once (missing ids are left out)."""
    found: dict[str, TaskCursor] = {}
    for start in range(0, len(task_ids), 500):
        chunk = list(task_ids[start : start + 500])
        query = select(
            tasks.c.id,
            tasks.c.event_t,
            tasks.c.full_read_at,
            tasks.c.finalized_at,
            tasks.c.error_count,
            tasks.c.status,
            tasks.c.terminal_seen_at,
            tasks.c.seen_active,
            tasks.c.unknown_status_polls,
        ).where(tasks.c.id.in_(chunk))
        for row in conn.execute(query):
            found[row.id] = TaskCursor(
                event_t=row.event_t,
                full_read=row.full_read_at is not None,
                finalized=row.finalized_at is not None,
                error_count=row.error_count,
                status=row.status,
                terminal_seen_at=_aware(row.terminal_seen_at),
                seen_active=bool(row.seen_active),
                unknown_polls=row.unknown_status_polls,
            )
    return found


def insert_events(
    conn: Connection,
    batches: Sequence[tuple[str, Sequence[KeyedEvent]]],
    now: datetime,
) -> None:
    """Store the events not stored yet, for several tasks at once; a re-read is a no-op,
    and a re-read event whose payload changed (an event with an id, filled in later)
    updates its row to the latest payload."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for task_id, events in batches:
        for key, ev in events:
            # The last read of a key wins: the sweep after a cursor read is the newest.
            rows[(task_id, key)] = {
                "task_id": task_id,
                "event_key": key,
                "event_id": ev.id,
                "name": ev.name,
                "payload": ev.payload,
                "timestamp": ev.timestamp,
                "timestamp_utc": to_utc(ev.timestamp),
                "archived_at": now,
            }
    if not rows:
        return
    stmt = dialect_insert(conn, task_events)
    stmt = stmt.on_conflict_do_update(
        index_elements=["task_id", "event_key"],
        set_={"payload": stmt.excluded.payload},
        # Only a changed payload writes: a plain re-read stays a no-op.
        where=task_events.c.payload.is_distinct_from(stmt.excluded.payload),
    )
    conn.execute(stmt, list(rows.values()))


@dataclass(frozen=True)
class PollSave:
    """What one poll of one task stores."""

    task: TaskInfo
    events: Sequence[KeyedEvent]
    full_read: bool
    finalize: bool
    #: A terminal read that waits for a confirming read on a later pass.
    terminal_seen: bool = False
    #: The task was seen waiting, running or in an unknown status.
    seen_active: bool = False
    #: Polls in a row in an unknown status (0 otherwise), and when to ask again.
    unknown_polls: int = 0
    next_poll_at: datetime | None = None


def save_polls(
    conn: Connection, saves: Sequence[PollSave], *, owner: str, now: datetime
) -> list[int]:
    """Store several polls in the caller's transaction; returns new events per save.

    One INSERT for every event of the batch and one executemany UPDATE of the tasks, so a
    group commit costs a handful of round trips whatever its size. Each task's events and
    its high-water mark (which only moves forwards) land in the same transaction. Raises
    LeaseLost when another run took any of the tasks meanwhile: the caller rolls back.
    """
    if not saves:
        return []
    ids = [save.task.id for save in saves]
    before = dict(
        conn.execute(select(tasks.c.id, tasks.c.event_count).where(tasks.c.id.in_(ids))).all()
    )
    insert_events(conn, [(save.task.id, save.events) for save in saves], now)
    # event_count is recounted, not incremented: exact whatever happened before, and it
    # tells how many of this batch's events were new without a slow INSERT ... RETURNING.
    after: dict[str, int] = dict(
        conn.execute(
            select(task_events.c.task_id, func.count())
            .where(task_events.c.task_id.in_(ids))
            .group_by(task_events.c.task_id)
        ).all()
    )
    params = []
    for save in saves:
        columns = _task_columns(save.task)
        stamps = [ev.timestamp for _, ev in save.events if ev.timestamp is not None]
        params.append(
            {
                "p_id": save.task.id,
                "p_owner": owner,
                "p_now": now,
                "p_event_count": after.get(save.task.id, 0),
                "p_high": max(stamps) if stamps else None,
                "p_full_read": save.full_read,
                "p_finalize": save.finalize,
                "p_terminal_seen": save.terminal_seen,
                "p_seen_active": save.seen_active,
                "p_unknown_polls": save.unknown_polls,
                "p_next_poll_at": save.next_poll_at,
                "p_created_at": columns.get("created_at"),
                "p_created_at_utc": columns.get("created_at_utc"),
                **{f"p_{name}": columns[name] for name in _POLL_COLUMNS},
            }
        )
    result = conn.execute(_poll_update(), params)
    if result.rowcount != len(saves):
        raise LeaseLost(", ".join(ids))
    return [after.get(task_id, 0) - before.get(task_id, 0) for task_id in ids]


_POLL_COLUMNS = (
    "status",
    "output",
    "credits_used",
    "device",
    "live_url",
    "recording_url",
    "downloads_url",
    "payload",
)


@functools.cache
def _poll_update() -> Any:
    """The UPDATE behind :func:`save_polls`, one statement for every kind of poll."""
    p = bindparam
    now = p("p_now", type_=UtcDateTime)
    high = p("p_high", type_=BigInteger)
    return (
        update(tasks)
        .where(tasks.c.id == p("p_id"), tasks.c.lease_owner == p("p_owner"))
        .values(
            **{name: p(f"p_{name}", type_=tasks.c[name].type) for name in _POLL_COLUMNS},
            created_at=func.coalesce(p("p_created_at", type_=BigInteger), tasks.c.created_at),
            created_at_utc=func.coalesce(
                p("p_created_at_utc", type_=UtcDateTime), tasks.c.created_at_utc
            ),
            event_count=p("p_event_count", type_=Integer),
            event_t=case(
                (and_(high.is_not(None), tasks.c.event_t < high), high),
                else_=tasks.c.event_t,
            ),
            full_read_at=case(
                (p("p_full_read", type_=Boolean), func.coalesce(tasks.c.full_read_at, now)),
                else_=tasks.c.full_read_at,
            ),
            finalized_at=case((p("p_finalize", type_=Boolean), now), else_=tasks.c.finalized_at),
            terminal_seen_at=case(
                (p("p_terminal_seen", type_=Boolean), func.coalesce(tasks.c.terminal_seen_at, now)),
                else_=None,
            ),
            seen_active=case((p("p_seen_active", type_=Boolean), True), else_=tasks.c.seen_active),
            unknown_status_polls=p("p_unknown_polls", type_=Integer),
            last_polled_at=now,
            last_error=None,
            error_count=0,
            next_poll_at=p("p_next_poll_at", type_=UtcDateTime),
            gone_at=None,
            not_found_count=0,
            lease_owner=None,
            lease_until=None,
        )
    )


def record_task_error(
    conn: Connection,
    task_id: str,
    message: str,
    *,
    owner: str,
    now: datetime,
    backoff: timedelta | None,
) -> None:
    """Record a failed poll on the task; hold it back for ``backoff`` (None: not at all)."""
    conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.lease_owner == owner)
        .values(
            last_error=message[:2000],
            error_count=tasks.c.error_count + 1,
            last_polled_at=now,
            next_poll_at=None if backoff is None else now + backoff,
            lease_owner=None,
            lease_until=None,
        )
    )


def record_not_found(
    conn: Connection,
    task_id: str,
    message: str,
    *,
    owner: str,
    now: datetime,
    gone_after: int,
) -> bool:
    """A credible 404 for the task (its pass proved the API URL right). One 404 can still be
    a glitch (read-after-create lag, a proxy): the task is asked again next pass and only
    recorded as gone, finalized and not polled again, after ``gone_after`` 404s in a row.
    Returns whether it is now gone."""
    gone = tasks.c.not_found_count + 1 >= gone_after
    row = conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.lease_owner == owner)
        .values(
            not_found_count=tasks.c.not_found_count + 1,
            last_error=message[:2000],
            last_polled_at=now,
            next_poll_at=None,
            gone_at=case((gone, now), else_=tasks.c.gone_at),
            finalized_at=case((gone, now), else_=tasks.c.finalized_at),
            lease_owner=None,
            lease_until=None,
        )
        .returning(tasks.c.gone_at)
    ).first()
    return row is not None and row.gone_at is not None


# --- sync state (versioned, migrated step by step) -----------------------------------

#: Current version of each state key's value.
STATE_VERSIONS: dict[str, int] = {"discovery": 1, "backfill": 1}


def get_state(conn: Connection, key: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(sync_state.c.version, sync_state.c.value).where(sync_state.c.key == key)
    ).first()
    if row is None:
        return None
    version, value = row.version, dict(row.value)
    target = STATE_VERSIONS[key]
    if version > target:
        raise StorageError(
            f"sync state {key!r} is at version {version}, newer than this archiver "
            f"understands ({target}); upgrade smooth-archiver."
        )
    # Future format changes add a step here: (key, from_version) -> upgraded value.
    while version < target:
        value = _STATE_STEPS[(key, version)](value)
        version += 1
    return value


_STATE_STEPS: dict[tuple[str, int], Any] = {}


def put_state(conn: Connection, key: str, value: dict[str, Any], now: datetime) -> None:
    row = {"key": key, "version": STATE_VERSIONS[key], "value": value, "updated_at": now}
    stmt = dialect_insert(conn, sync_state).values(row)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={"version": row["version"], "value": value, "updated_at": now},
        )
    )


# --- runs ------------------------------------------------------------------------------


def start_run(
    conn: Connection, *, run_id: str, command: str, host: str, pid: int, now: datetime
) -> None:
    conn.execute(
        sync_runs.insert().values(
            run_id=run_id, command=command, host=host, pid=pid, started_at=now, outcome="running"
        )
    )


def finish_run(
    conn: Connection,
    run_id: str,
    *,
    outcome: str,
    counts: dict[str, int],
    message: str | None,
    now: datetime,
) -> None:
    conn.execute(
        update(sync_runs)
        .where(sync_runs.c.run_id == run_id)
        .values(
            outcome=outcome,
            finished_at=now,
            message=message,
            **{name: counts.get(name, 0) for name in STORED_COUNTERS},
        )
    )


# --- status ---------------------------------------------------------------------------


def status_report(conn: Connection, *, last_runs: int = 5) -> dict[str, Any]:
    """Counts for ``archiver status``: tasks by status, active/finalized, events, runs."""
    by_status = {
        (status or "(unknown)"): count
        for status, count in conn.execute(
            select(tasks.c.status, func.count()).group_by(tasks.c.status).order_by(tasks.c.status)
        )
    }
    active = conn.scalar(select(func.count()).where(tasks.c.finalized_at.is_(None))) or 0
    total = sum(by_status.values())
    in_error = conn.scalar(select(func.count()).where(tasks.c.next_poll_at.is_not(None))) or 0
    gone = conn.scalar(select(func.count()).where(tasks.c.gone_at.is_not(None))) or 0
    events = conn.scalar(select(func.count()).select_from(task_events)) or 0
    runs = [
        {
            "command": row.command,
            "started_at": _iso(row.started_at),
            "finished_at": _iso(row.finished_at),
            "outcome": row.outcome,
            **{name: getattr(row, name) for name in STORED_COUNTERS},
            "message": row.message,
        }
        for row in conn.execute(
            select(sync_runs).order_by(sync_runs.c.started_at.desc()).limit(last_runs)
        )
    ]
    return {
        "tasks": total,
        "tasks_by_status": by_status,
        "active": active,
        "finalized": total - active,
        "in_error_backoff": in_error,
        "gone": gone,
        "events": events,
        "last_runs": runs,
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(sep=" ", timespec="seconds")
