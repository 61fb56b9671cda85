"""Opening the archive database, migrating it, and every query the sync engine runs.

SQLite (the embedded default) runs in WAL mode with a busy timeout and takes its write
lock at BEGIN (``BEGIN IMMEDIATE``), so concurrent archiver processes queue instead of
failing on a lock upgrade, and analysts' readers never block a sync. PostgreSQL runs at
READ COMMITTED; every statement that races another process is a single conditional
UPDATE or an ``INSERT ... ON CONFLICT``, which is atomic there.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

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
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.pool import NullPool

from archiver.exceptions import ArchiverError, ConfigError, DataRefused, LeaseLost, StorageError
from archiver.jsonvalues import (
    column_texts,
    column_values,
    json_column,
    loads_json,
    storage_json,
    text_column_value,
)
from archiver.models import KeyedEvent, TaskInfo, strip_query
from archiver.schema import UtcDateTime, sync_runs, sync_state, task_events, tasks
from archiver.stats import STORED_COUNTERS
from archiver.timestamps import aware, sqlite_utc_text, to_utc

log = logging.getLogger(__name__)

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
    """An Engine for ``url``. SQLite files are created owner-only, with WAL and busy
    timeout; ``read_only`` opens an existing archive without creating or writing anything
    (SQLite: ``mode=ro``; PostgreSQL: read-only transactions)."""
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
        return _sqlite_engine(url, parsed.database, read_only=read_only)
    if backend == "postgresql":
        options = f"-c lock_timeout={POSTGRES_LOCK_TIMEOUT_MS}"
        if read_only:
            # The server itself refuses any write of a read-only command.
            options += " -c default_transaction_read_only=on"
        try:
            # executemany runs in psycopg's pipeline mode; insertmanyvalues would re-render
            # and re-parse one huge INSERT per batch size instead.
            return create_engine(
                url,
                pool_pre_ping=True,
                json_serializer=storage_json,
                json_deserializer=loads_json,
                use_insertmanyvalues=False,
                # A row lock held elsewhere (an analyst's SELECT ... FOR UPDATE, a session
                # idle in a transaction) fails the statement instead of hanging the pass.
                connect_args={"options": options},
            )
        except ImportError:
            raise ConfigError(
                "PostgreSQL support is not installed: pip install '.[postgres]' in the "
                "smooth-archiver checkout (or pip install 'psycopg[binary]')."
            ) from None
    raise ConfigError(
        f"database URL scheme {parsed.drivername!r} is not supported: "
        f"use one of {', '.join(SUPPORTED_SCHEMES)}."
    )


#: The first 16 bytes of every SQLite database file (an empty file is a new database).
SQLITE_MAGIC = b"SQLite format 3\x00"
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def _check_sqlite_file(path: Path) -> None:
    """An existing file that SQLite can open; a one-line ConfigError naming it otherwise."""
    try:
        with path.open("rb") as file:
            head = file.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise ConfigError(
            f"no archive at {str(path)!r}: the SQLite file does not exist. Check "
            "--database-url / ARCHIVER_DATABASE_URL (or ARCHIVER_HOME); `archiver sync` "
            "creates a new archive."
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the SQLite database {str(path)!r}: {exc.strerror}; check the path "
            "and that this user may read the file."
        ) from None
    if head and head != SQLITE_MAGIC:
        raise ConfigError(_not_a_database(path))


def _not_a_database(path: Path | str) -> str:
    return (
        f"{str(path)!r} is not a SQLite database (or it is damaged): check --database-url / "
        "ARCHIVER_DATABASE_URL names the archive file."
    )


def _read_only_message(path: Path, what: str) -> str:
    return (
        f"the SQLite archive {str(path)!r} is read-only ({what}): sync, backfill and db "
        "upgrade write to it, so give this user write access to the file and its folder "
        "(status, report and verify read it as it is)."
    )


def _open_sqlite_for_writing(path: Path) -> None:
    """The archive file, created owner-only if new; a clear error if it cannot be written."""
    if path.exists():
        _check_sqlite_file(path)
        try:
            os.close(os.open(path, os.O_RDWR))
        except OSError as exc:
            if exc.errno in _NOT_WRITABLE:
                raise ConfigError(_read_only_message(path, "the file")) from None
            raise StorageError(
                f"cannot open the SQLite database {str(path)!r}: {exc.strerror}"
            ) from None
        # WAL mode creates -wal and -shm beside the file unless a writer left them there.
        wal = path.with_name(path.name + "-wal")
        if not wal.exists() and not os.access(path.parent, os.W_OK | os.X_OK, effective_ids=True):
            raise ConfigError(_read_only_message(path, "its folder"))
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created owner-only before SQLite opens it; SQLite gives -wal/-shm the same mode.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    except OSError as exc:
        raise StorageError(
            f"cannot create the SQLite database {str(path)!r}: {exc.strerror}; "
            "check the directory exists and is writable, or set ARCHIVER_HOME."
        ) from None


def _read_only_sqlite(path: Path) -> Any:
    """A connection factory that opens ``path`` read-only and leaves no file behind.

    ``mode=ro`` still creates -wal/-shm files beside a WAL database (and cannot open one at
    all in a folder this user may not write). When no -wal or -journal file exists the whole
    database is in the main file, which a writer only rewrites at a checkpoint, so it is
    opened ``immutable``: nothing is created or locked. Decided per connection (the engine
    uses no pool), since a writer may start or stop between two reads.
    """
    uri = path.absolute().as_uri() + "?mode=ro"

    def connect() -> sqlite3.Connection:
        at_rest = not any(
            path.with_name(path.name + suffix).exists() for suffix in ("-wal", "-journal")
        )
        return sqlite3.connect(
            uri + ("&immutable=1" if at_rest else ""), uri=True, check_same_thread=False
        )

    return connect


def _sqlite_engine(url: str, database: str | None, *, read_only: bool = False) -> Engine:
    file = database not in (None, "", ":memory:") and not database.startswith("file:")
    path = Path(database).expanduser() if file and database else None
    if path is not None and read_only:
        _check_sqlite_file(path)
        engine = create_engine(
            "sqlite://",
            creator=_read_only_sqlite(path),
            poolclass=NullPool,
            json_serializer=storage_json,
            json_deserializer=loads_json,
        )
    else:
        if path is not None:
            _open_sqlite_for_writing(path)
        engine = create_engine(url, json_serializer=storage_json, json_deserializer=loads_json)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if read_only:
            # journal_mode would write the header; query_only refuses any write.
            cursor.execute("PRAGMA query_only = ON")
        else:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the lock up front; readers (status, report) take a snapshot only.
        conn.exec_driver_sql("BEGIN" if conn.info.get(_READ_ONLY) else "BEGIN IMMEDIATE")

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


#: ``revision = "x"`` / ``down_revision = "y" | None`` lines of a migration script.
_REVISION_LINE = re.compile(
    r'^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(?:"([^"]*)"|\'([^\']*)\'|(None))\s*$',
    re.MULTILINE,
)


@functools.cache
def head_revision() -> str | None:
    """The newest migration, read from the scripts' revision lines.

    Every `sync` asks, and Alembic's script machinery costs about 0.1 s of start-up, so
    the chain is read with a regular expression; anything it does not understand (a
    merge, several heads, a script without those lines) goes to Alembic itself.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in Path(migrations_location(), "versions").glob("*.py"):
        if script.name.startswith("__"):
            continue
        found = {m[1]: m[2] or m[3] for m in _REVISION_LINE.finditer(script.read_text())}
        if "revision" not in found or "down_revision" not in found:
            return _alembic_head()
        revisions.add(found["revision"])
        if found["down_revision"]:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else _alembic_head()


def _alembic_head() -> str | None:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: no schema), read from alembic_version
    directly rather than through Alembic (start-up time)."""
    with engine.connect() as conn:
        conn.info[_READ_ONLY] = True
        try:
            if not inspect(conn).has_table("alembic_version"):
                return None
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        finally:
            conn.info.pop(_READ_ONLY, None)
    if len(rows) > 1:
        raise StorageError(
            f"the archive records several schema revisions ({', '.join(sorted(rows))}) in "
            "alembic_version; expected one (hand-edited?): fix that table, then run again."
        )
    return rows[0] if rows else None


#: pg_advisory_xact_lock key that serialises migrations on one PostgreSQL database
#: ("smooth" in ASCII; advisory locks are per database, so only this archive's runs meet).
MIGRATION_LOCK_KEY = 0x736D6F6F7468
#: How long a run waits for another host's migration before giving up.
MIGRATION_LOCK_WAIT_MS = 600_000


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` (default: head).

    Two hosts' cron runs may start on one database together. On PostgreSQL the second
    waits for the first's migration transaction on an advisory lock, then finds the schema
    at head and does nothing; on SQLite ``BEGIN IMMEDIATE`` already serialises them.
    """
    from alembic import command

    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                _set_lock_timeout(conn, MIGRATION_LOCK_WAIT_MS)
                conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
                _set_lock_timeout(conn, POSTGRES_LOCK_TIMEOUT_MS)
            command.upgrade(_alembic_config(conn), revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"migrating the database failed: {db_message(exc)}") from None


def _set_lock_timeout(conn: Connection, milliseconds: int) -> None:
    """lock_timeout for the rest of this transaction only."""
    conn.execute(select(func.set_config("lock_timeout", str(milliseconds), True)))


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
        one-line error if that fails."""
        with self._opening():
            if self.read_only:
                self._check_readable()
            else:
                ensure_current(self.engine)

    def revision(self) -> str | None:
        """The archive's schema revision (None: no schema yet), for ``archiver db``."""
        with self._opening():
            return current_revision(self.engine)

    @contextmanager
    def _opening(self) -> Iterator[None]:
        """Driver errors while opening the archive as one line that says what to do."""
        try:
            yield
        except DBAPIError as exc:
            raise self._open_error(exc) from None

    def _open_error(self, exc: DBAPIError) -> ArchiverError:
        orig = exc.orig
        code = getattr(orig, "sqlite_errorcode", None)
        name = make_url(self.url).database or ""
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return ConfigError(_not_a_database(name))
        if code == sqlite3.SQLITE_READONLY and not self.read_only:
            return ConfigError(_read_only_message(Path(name), "the file or its folder"))
        if self.dialect == "postgresql" and f'database "{name}" does not exist' in str(orig):
            return ConfigError(
                f"the PostgreSQL database {name!r} does not exist on "
                f"{self.display_url()}: check --database-url / ARCHIVER_DATABASE_URL, or "
                f"create it (createdb {name}) and run `archiver sync`."
            )
        return StorageError(
            f"cannot open the database {self.display_url()}: {db_message(exc)}; "
            "check the URL, that the server runs, and permissions."
        )

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


def _task_columns(task: TaskInfo, dialect: str) -> dict[str, Any]:
    """The columns of ``tasks`` that come straight from an API payload."""
    payload, payload_raw = column_values(task.payload_without_events(), dialect)
    # The payload holds the output: when it is exact, so is the output (the common case).
    output, output_raw = (
        (task.output, None) if payload_raw is None else column_values(task.output, dialect)
    )
    columns: dict[str, Any] = {
        "status": task.status,
        "output": output,
        "output_raw": output_raw,
        "credits_used": task.credits_used,
        "device": task.device,
        "live_url": strip_query(task.live_url),
        "recording_url": strip_query(task.recording_url),
        "downloads_url": strip_query(task.downloads_url),
        "payload": payload,
        "payload_raw": payload_raw,
    }
    if payload_raw is not None:
        # Text the database cannot hold (a lone surrogate in `device`, say) is replaced
        # here; payload_raw holds every one of these fields exactly.
        for name in ("status", "device", "live_url", "recording_url", "downloads_url"):
            columns[name] = text_column_value(columns[name], dialect)
    if task.created_at is not None:
        columns["created_at"] = task.created_at
        columns["created_at_utc"] = to_utc(task.created_at)
    return columns


def insert_new_tasks(conn: Connection, listed: Sequence[TaskInfo], now: datetime) -> list[str]:
    """Insert the listed tasks not yet known; returns the ids that were new."""
    dialect = conn.dialect.name
    rows = {
        task.id: {"id": task.id, "first_seen_at": now, **_task_columns(task, dialect)}
        for task in listed
    }
    return _insert_listed_rows(conn, rows, now)


def insert_listed_ids(conn: Connection, task_ids: Iterable[str], now: datetime) -> list[str]:
    """Track listed tasks known only by id (their list item was malformed; Get Task fills
    them in); returns the ids that were new."""
    rows = {task_id: {"id": task_id, "first_seen_at": now} for task_id in task_ids}
    return _insert_listed_rows(conn, rows, now)


def _insert_listed_rows(
    conn: Connection, rows: dict[str, dict[str, Any]], now: datetime
) -> list[str]:
    """Insert the rows of listed tasks not yet known. A listed task recorded as gone (e.g.
    by a pass against a wrong URL) is active again: the API lists it."""
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
    """Tasks ``sync`` should poll now: not finalized and not in error back-off.

    Least recently polled first (never polled before all), so a pass that ``--max-runtime``
    cuts short leaves the tasks it just polled, not the same old ones every time.
    """
    query = (
        select(tasks.c.id)
        .where(tasks.c.finalized_at.is_(None))
        .where((tasks.c.next_poll_at.is_(None)) | (tasks.c.next_poll_at <= now))
        .order_by(tasks.c.last_polled_at.asc().nulls_first(), tasks.c.created_at.desc(), tasks.c.id)
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
                terminal_seen_at=aware(row.terminal_seen_at),
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
    updates its row to the latest payload.

    The hottest statement of a sync: its rows go straight to the driver as plain tuples
    (SQLite: executemany; PostgreSQL: COPY), each value already in the form
    SQLAlchemy's column types would bind (JSON as canonical text, times as the dialect
    stores them), skipping per-row parameter processing, which cost more than the
    database's own work.
    """
    dialect = conn.dialect.name
    sqlite = dialect == "sqlite"
    archived_at = _sqlite_time(now) if sqlite else now
    column = json_column(dialect)
    rows: dict[tuple[str, str], tuple[Any, ...]] = {}
    for task_id, events in batches:
        for key, ev in events:
            # The last read of a key wins: the sweep after a cursor read is the newest.
            payload, payload_raw = column_texts(ev.payload, column)
            extra, extra_raw = column_texts(ev.extra, column)
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
        raise _driver_error(conn, _PG_COPY_INCOMING, exc) from exc
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


def _driver_error(conn: Connection, statement: str, exc: Exception) -> Exception:
    """A driver exception raised outside SQLAlchemy's execute, as SQLAlchemy would raise
    it (DataError, OperationalError, ...), the connection invalidated if it is gone."""
    dbapi = conn.dialect.loaded_dbapi
    if not isinstance(exc, dbapi.Error):
        return exc
    if conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None):
        conn.invalidate(exc)
    return DBAPIError.instance(statement, None, exc, dbapi.Error)


#: The COPY path of PostgreSQL (see insert_events): a temporary table per session, empty
#: at each commit, created in the transaction that uses it (so a pooler handing out other
#: server sessions, or a rolled-back creation, cannot leave it missing), in the column
#: order of the insert's rows; the INSERT empties it as it moves the rows.
_PG_INCOMING_TABLE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS archiver_incoming_events (task_id text, "
    "event_key text, event_id text, name text, payload text, payload_raw text, "
    '"timestamp" bigint, archived_at timestamptz, extra text, extra_raw text, '
    "timestamp_utc timestamptz) ON COMMIT DELETE ROWS"
)
_PG_COPY_INCOMING = "COPY archiver_incoming_events FROM STDIN"
#: What a row already stored becomes on PostgreSQL, by either insert path: only a changed
#: payload (or extra fields) writes, so a plain re-read stays a no-op.
_PG_EVENTS_CONFLICT = (
    "ON CONFLICT (task_id, event_key) DO UPDATE SET payload = excluded.payload, "
    "payload_raw = excluded.payload_raw, extra = excluded.extra, "
    "extra_raw = excluded.extra_raw "
    "WHERE task_events.payload IS DISTINCT FROM excluded.payload "
    "OR task_events.extra IS DISTINCT FROM excluded.extra"
)
_PG_MOVE_INCOMING = (
    "WITH incoming AS (DELETE FROM archiver_incoming_events RETURNING *) "
    "INSERT INTO task_events (task_id, event_key, event_id, name, payload, payload_raw, "
    '"timestamp", archived_at, extra, extra_raw, timestamp_utc) '
    "SELECT task_id, event_key, event_id, name, payload::jsonb, payload_raw, "
    '"timestamp", archived_at, extra::jsonb, extra_raw, timestamp_utc FROM incoming '
    + _PG_EVENTS_CONFLICT
)

#: The row-by-row INSERT of PostgreSQL (a role that may not create the COPY table).
_PG_INSERT_EVENTS = (
    "INSERT INTO task_events (task_id, event_key, event_id, name, payload, payload_raw, "
    '"timestamp", archived_at, extra, extra_raw, timestamp_utc) '
    "VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s::jsonb, %s, %s) " + _PG_EVENTS_CONFLICT
)


#: The SQLite events INSERT (executemany, one row per step). Multi-row statements (up to
#: 256 rows, one GIL release per chunk instead of per event) were measured and dropped:
#: the writer spent less time in the insert, but peak RSS grew with the archive's size
#: (100k tasks: 96-102 MB against 86 MB), which docs/performance.md explains.
_SQLITE_INSERT_EVENTS = (
    "INSERT INTO task_events (task_id, event_key, event_id, name, payload, payload_raw, "
    "timestamp, archived_at, extra, extra_raw, timestamp_utc) "
    f"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, {sqlite_utc_text('?7')}) "
    # Only a changed payload (or extra fields) writes: a plain re-read stays a no-op.
    "ON CONFLICT (task_id, event_key) DO UPDATE SET payload = excluded.payload, "
    "payload_raw = excluded.payload_raw, extra = excluded.extra, "
    "extra_raw = excluded.extra_raw "
    "WHERE task_events.payload IS NOT excluded.payload "
    "OR task_events.extra IS NOT excluded.extra"
)


def _sqlite_time(value: datetime) -> str:
    """A UTC datetime as SQLAlchemy's SQLite DateTime stores it (psycopg takes datetimes
    as they are): isoformat is C code, and its first 26 characters are exactly that format
    (tests/test_db.py compares the two). Every time here is UTC."""
    return value.isoformat(" ", "microseconds")[:26]


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
    insert_events(conn, [(save.task.id, save.events) for save in saves], now)
    # event_count is recounted, not incremented: exact whatever happened before, and it
    # tells how many of this batch's events were new without a slow INSERT ... RETURNING.
    # One query reads both: tasks.event_count still holds the count before this insert
    # (the UPDATE below sets it), the subquery counts the rows stored now.
    stored = (
        select(func.count())
        .select_from(task_events)
        .where(task_events.c.task_id == tasks.c.id)
        .scalar_subquery()
    )
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    for task_id, recorded, now_stored in conn.execute(
        select(tasks.c.id, tasks.c.event_count, stored).where(tasks.c.id.in_(ids))
    ):
        before[task_id], after[task_id] = recorded, now_stored
    params = []
    for save in saves:
        columns = _task_columns(save.task, conn.dialect.name)
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
    "output_raw",
    "payload_raw",
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
STATE_VERSIONS: dict[str, int] = {"discovery": 1, "backfill": 1, "unlisted": 1}


def get_state(conn: Connection, key: str, *, for_update: bool = False) -> dict[str, Any] | None:
    """The value under ``key``, upgraded to its current version; None when there is none.
    ``for_update`` locks the row until the transaction ends (PostgreSQL; SQLite's
    transactions already hold the write lock)."""
    query = select(sync_state.c.version, sync_state.c.value).where(sync_state.c.key == key)
    row = conn.execute(query.with_for_update() if for_update else query).first()
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


def raise_discovery_watermark(conn: Connection, newest: int, now: datetime) -> None:
    """Move discovery's watermark up to ``newest`` (a created_at), never down."""
    state = get_state(conn, "discovery") or {}
    known = state.get("newest_created_at")
    if known is None or newest > known:
        put_state(conn, "discovery", {**state, "newest_created_at": newest}, now)


def put_state(conn: Connection, key: str, value: dict[str, Any], now: datetime) -> None:
    row = {"key": key, "version": STATE_VERSIONS[key], "value": value, "updated_at": now}
    stmt = dialect_insert(conn, sync_state).values(row)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={"version": row["version"], "value": value, "updated_at": now},
        )
    )


def _locked_state(conn: Connection, key: str, now: datetime) -> dict[str, Any]:
    """The value under ``key`` (``{}`` when new), its row locked for a read-modify-write
    that a concurrent run cannot overwrite."""
    conn.execute(
        dialect_insert(conn, sync_state)
        .values(key=key, version=STATE_VERSIONS[key], value={}, updated_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    return get_state(conn, key, for_update=True) or {}


# --- created_at groups List Tasks cannot page through ("unlisted") ---------------------
#
# State "unlisted", version 1: {"groups": {"<created_at>": {"listed": int, "command": str,
# "first_seen_at": iso, "last_seen_at": iso, "acknowledged_at": iso | None}}}


def record_unlisted_group(
    conn: Connection, created_at: int, listed: int, *, command: str, now: datetime
) -> bool:
    """Record that a full page of List Tasks shared ``created_at`` (the rest of that group,
    if any, cannot be listed); returns whether an operator already acknowledged it."""
    state = _locked_state(conn, "unlisted", now)
    groups = state.setdefault("groups", {})
    stamp = now.isoformat(timespec="seconds")
    group = groups.setdefault(
        str(created_at), {"first_seen_at": stamp, "acknowledged_at": None, "listed": 0}
    )
    group.update(listed=max(group["listed"], listed), command=command, last_seen_at=stamp)
    put_state(conn, "unlisted", state, now)
    return group["acknowledged_at"] is not None


def acknowledge_unlisted(conn: Connection, created_at: int, now: datetime) -> dict[str, Any]:
    """Mark a recorded group as dealt with (``status`` stops showing it, passes that meet it
    again only warn); returns it as :func:`unlisted_groups` shows it. ConfigError when no
    such group is recorded."""
    state = _locked_state(conn, "unlisted", now)
    groups = state.setdefault("groups", {})
    group = groups.get(str(created_at))
    if group is None:
        recorded = ", ".join(groups) or "none"
        raise ConfigError(
            f"--ack-unlisted {created_at}: no group of unlisted tasks with that created_at is "
            f"recorded (recorded: {recorded}); `archiver status` shows the created_at to give."
        )
    if group["acknowledged_at"] is None:
        group["acknowledged_at"] = now.isoformat(timespec="seconds")
        put_state(conn, "unlisted", state, now)
    return _describe_unlisted(conn, created_at, group)


def unlisted_groups(conn: Connection) -> list[dict[str, Any]]:
    """The recorded groups not yet acknowledged, oldest first, with how many tasks of that
    created_at the archive holds by now."""
    state = get_state(conn, "unlisted") or {}
    return [
        _describe_unlisted(conn, int(key), group)
        for key, group in sorted(state.get("groups", {}).items(), key=lambda kv: int(kv[0]))
        if group["acknowledged_at"] is None
    ]


def _describe_unlisted(conn: Connection, created_at: int, group: dict[str, Any]) -> dict[str, Any]:
    archived = conn.scalar(select(func.count()).where(tasks.c.created_at == created_at)) or 0
    utc = to_utc(created_at)
    return {
        "created_at": created_at,
        "created_at_utc": None if utc is None else utc.isoformat(sep=" "),
        "listed": group["listed"],
        "archived": archived,
        **{name: group.get(name) for name in ("command", "first_seen_at", "last_seen_at")},
        "acknowledged_at": group["acknowledged_at"],
    }


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
    # One scan of ix_tasks_status_summary (a covering index), not one scan of the wide
    # tasks rows per figure plus a count of every event row: under a second at 100k tasks.
    # Events stored are the sum of tasks.event_count, which each save recounts in the
    # transaction that inserts the events.
    by_status: dict[str, int] = {}
    active = in_error = gone = events = 0
    for row in conn.execute(
        select(
            tasks.c.status,
            func.count(),
            func.count() - func.count(tasks.c.finalized_at),
            func.count(tasks.c.next_poll_at),
            func.count(tasks.c.gone_at),
            func.coalesce(func.sum(tasks.c.event_count), 0),
        )
        .group_by(tasks.c.status)
        .order_by(tasks.c.status)
    ):
        key = row[0] or "(unknown)"
        by_status[key] = by_status.get(key, 0) + row[1]
        active += row[2]
        in_error += row[3]
        gone += row[4]
        events += int(row[5])
    total = sum(by_status.values())
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
        "unlisted": unlisted_groups(conn),
        "tasks_by_status": by_status,
        "active": active,
        "finalized": total - active,
        "in_error_backoff": in_error,
        "gone": gone,
        "events": events,
        "last_runs": runs,
    }


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 with its time zone; SQLite hands back naive datetimes, stored as UTC."""
    if value is None:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds")
