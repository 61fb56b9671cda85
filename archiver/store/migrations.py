"""The archive's schema version: Alembic migrations, and reading the revision fast."""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from archiver.exceptions import StorageError
from archiver.store.engines import POSTGRES_LOCK_TIMEOUT_MS, READ_ONLY
from archiver.store.errors import db_message


def migrations_location() -> str:
    """Where the Alembic scripts are: the installed copy inside the package."""
    return str(resources.files("archiver._migrations"))


def alembic_config(connection: Connection) -> Any:
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

    cfg = alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: no schema), read from alembic_version
    directly rather than through Alembic (start-up time)."""
    with engine.connect() as conn:
        conn.info[READ_ONLY] = True
        try:
            if not inspect(conn).has_table("alembic_version"):
                return None
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        finally:
            conn.info.pop(READ_ONLY, None)
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
            command.upgrade(alembic_config(conn), revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"migrating the database failed: {db_message(exc)}") from None


def _set_lock_timeout(conn: Connection, milliseconds: int) -> None:
    """lock_timeout for the rest of this transaction only."""
    conn.execute(select(func.set_config("lock_timeout", str(milliseconds), True)))


def ensure_current(engine: Engine) -> None:
    """Upgrade a database that is behind the code; a no-op when it is at head."""
    if current_revision(engine) != head_revision():
        upgrade(engine)
