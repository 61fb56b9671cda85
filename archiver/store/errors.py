"""Driver errors as the archiver's own: one line that says what happened and what to do."""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.exc import DataError, DBAPIError, StatementError

from archiver.exceptions import DataRefused, StorageError


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


def driver_error(conn: Connection, statement: str, exc: Exception) -> Exception:
    """A driver exception raised outside SQLAlchemy's execute, as SQLAlchemy would raise
    it (DataError, OperationalError, ...), the connection invalidated if it is gone."""
    dbapi = conn.dialect.loaded_dbapi
    if not isinstance(exc, dbapi.Error):
        return exc
    if conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None):
        conn.invalidate(exc)
    return DBAPIError.instance(statement, None, exc, dbapi.Error)
