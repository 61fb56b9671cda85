"""Opening the archive: database URLs, SQLAlchemy engines, and the SQLite file itself.

SQLite (the embedded default) runs in WAL mode with a busy timeout and takes its write
lock at BEGIN (``BEGIN IMMEDIATE``), so concurrent archiver processes queue instead of
failing on a lock upgrade, and analysts' readers never block a sync. PostgreSQL runs at
READ COMMITTED; every statement that races another process is a single conditional
UPDATE or an ``INSERT ... ON CONFLICT``, which is atomic there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from archiver.exceptions import ConfigError, StorageError
from archiver.jsonvalues import loads_json, storage_json
from archiver.redact import redact

SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_LOCK_TIMEOUT_MS = 30_000
#: Connection.info flag: the transaction only reads (SQLite: deferred BEGIN, no write lock).
READ_ONLY = "archiver_read_only"
SUPPORTED_SCHEMES = ("sqlite:///PATH", "postgresql://USER@HOST/DB")


def normalize_database_url(url: str) -> str:
    """Accept the URL spellings people use and pick the driver we ship (psycopg 3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def display_url(url: str) -> str:
    """A database URL as it may be shown (messages, ``status``, /health, logs): every
    credential masked, the userinfo password and ``?password=``/``?sslpassword=`` alike."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL (a bad port among others)
        shown = url
    return redact(shown, [])


#: Every Engine this process made that is still alive, for :func:`close_all`.
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def close_all() -> None:
    """Close the connections of every engine this process made (the ``archiver`` command
    calls this as it exits, ``archiver.__main__``).

    The command skips the interpreter's last garbage collection, which is what would
    otherwise close a connection left in a reference cycle. Closing explicitly matters:
    SQLite folds its WAL back into the file when the last connection closes, and
    PostgreSQL sees a clean goodbye instead of a dropped socket.
    """
    for engine in list(_ENGINES):
        # Exiting: what cannot be closed cleanly, the OS closes.
        with contextlib.suppress(Exception):
            engine.dispose()


def create_db_engine(url: str, *, read_only: bool = False) -> Engine:
    """An Engine for ``url``. SQLite files are created owner-only, with WAL and busy
    timeout; ``read_only`` opens an existing archive without creating or writing anything
    (SQLite: ``mode=ro``; PostgreSQL: read-only transactions)."""
    engine = _create_engine(url, read_only=read_only)
    _ENGINES.add(engine)
    return engine


def _create_engine(url: str, *, read_only: bool) -> Engine:
    url = normalize_database_url(url)
    if "://" not in url and url.strip():
        path = Path(url).expanduser().absolute()
        raise ConfigError(
            f"database URL {url!r} is a file path, not a URL: for a SQLite archive there, "
            f"use sqlite:///{path.as_posix()} (sqlite:/// then the absolute path); for "
            "PostgreSQL, postgresql://USER@HOST/DB (set --database-url or "
            "ARCHIVER_DATABASE_URL)."
        )
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"database URL {display_url(url)!r} is not a URL: expected one of "
            f"{', '.join(SUPPORTED_SCHEMES)} (set --database-url or ARCHIVER_DATABASE_URL)."
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
        raise ConfigError(not_a_database(path))


def not_a_database(path: Path | str) -> str:
    return (
        f"{str(path)!r} is not a SQLite database (or it is damaged): check --database-url / "
        "ARCHIVER_DATABASE_URL names the archive file."
    )


def read_only_message(path: Path, what: str) -> str:
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
                raise ConfigError(read_only_message(path, "the file")) from None
            raise StorageError(
                f"cannot open the SQLite database {str(path)!r}: {exc.strerror}"
            ) from None
        # WAL mode creates -wal and -shm beside the file unless a writer left them there.
        wal = path.with_name(path.name + "-wal")
        if not wal.exists() and not os.access(path.parent, os.W_OK | os.X_OK, effective_ids=True):
            raise ConfigError(read_only_message(path, "its folder"))
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
        conn.exec_driver_sql("BEGIN" if conn.info.get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def dialect_insert(conn: Connection, table: Any) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing``/``do_update``."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
