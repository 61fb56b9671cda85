"""An archive database: its engine, and the transactions every other store module runs in."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from archiver.exceptions import ArchiverError, ConfigError, StorageError
from archiver.store.engines import (
    READ_ONLY,
    create_db_engine,
    display_url,
    normalize_database_url,
    not_a_database,
    read_only_message,
)
from archiver.store.errors import VALUE_ERRORS, db_message, wrap_error
from archiver.store.migrations import current_revision, ensure_current, head_revision


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
        """The URL with every credential hidden, for messages and ``status``."""
        return display_url(self.url)

    def location(self) -> str:
        """Where the archive is: a SQLite file's absolute path, else the display URL."""
        url = make_url(self.url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            assert url.database is not None
            if not url.database.startswith("file:"):
                return str(Path(url.database).expanduser().absolute())
        return self.display_url()

    def prepare(self, *, on_new: Callable[[str], None] | None = None) -> None:
        """Connect and bring the schema to head (read-only: check it is there); a clear
        one-line error if that fails. ``on_new(location)`` is told first when the
        database holds no archive yet (a new SQLite file, an empty PostgreSQL database)."""
        with self._opening():
            if self.read_only:
                self._check_readable()
                return
            if on_new is not None and current_revision(self.engine) is None:
                on_new(self.location())
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
            return ConfigError(not_a_database(name))
        if code == sqlite3.SQLITE_READONLY and not self.read_only:
            return ConfigError(read_only_message(Path(name), "the file or its folder"))
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
    def erasing(self) -> Iterator[Connection]:
        """A transaction whose deletes and updates leave none of the old bytes behind in
        the database file: on SQLite with ``secure_delete`` (freed content is overwritten
        with zeros), then :meth:`checkpoint` clears the WAL. On PostgreSQL a plain
        transaction: VACUUM reclaims the dead rows (docs/governance.md)."""
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.dbapi_connection if self.dialect == "sqlite" else None
                # A connection setting, set outside the transaction and restored after
                # (a SQLite may be built with secure delete on by default).
                before = 0
                if raw is not None:
                    before = int(raw.execute("PRAGMA secure_delete").fetchone()[0])
                    raw.execute("PRAGMA secure_delete = ON")
                try:
                    with conn.begin():
                        yield conn
                finally:
                    if raw is not None:
                        raw.execute(f"PRAGMA secure_delete = {before}")
        except (SQLAlchemyError, *VALUE_ERRORS) as exc:
            raise wrap_error(exc) from exc

    def checkpoint(self) -> bool:
        """SQLite: copy the WAL into the database file and truncate it to zero bytes, so no
        page image of erased rows stays in it (waits up to the busy timeout for readers);
        returns whether it completed. Nothing to do on PostgreSQL."""
        if self.dialect != "sqlite":
            return True
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                assert raw is not None
                busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except SQLAlchemyError as exc:
            raise wrap_error(exc) from exc
        return busy == 0

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only transaction: one consistent snapshot that never waits for a writer
        (on SQLite it takes no write lock, so it also works on a read-only file)."""
        try:
            with self.engine.connect() as conn:
                conn.info[READ_ONLY] = True
                try:
                    with conn.begin():
                        yield conn
                finally:
                    conn.info.pop(READ_ONLY, None)
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {db_message(exc)}") from exc

    def dispose(self) -> None:
        self.engine.dispose()
