"""The command lock and task leases, directly (the CLI tests cover them end to end)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from archiver import locks as locks_module
from archiver.db import Database, insert_task_stubs
from archiver.exceptions import LockHeld
from archiver.locks import RunLock
from archiver.timestamps import utcnow


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[Database]:
    db = Database(postgres_url)
    db.prepare()
    yield db
    db.dispose()


def test_a_live_lock_holder_keeps_its_lock_against_another_run(database: Database) -> None:
    """While the holder's heartbeat is fresh, another run (another host) gets LockHeld."""
    first = RunLock(database, "sync")
    first.acquire()
    try:
        second = RunLock(database, "sync")
        second.host = "another-host"  # its pid check cannot apply; only the heartbeat counts
        with pytest.raises(LockHeld, match=f"pid {first.pid} on {first.host}"):
            second.acquire()
    finally:
        first.release()


def test_a_stale_lock_is_taken_over_and_its_leases_freed(database: Database) -> None:
    """A holder whose heartbeat is older than stale_after loses the lock and its leases."""
    dead = RunLock(database, "sync", stale_after_s=0.0)
    dead.host = "crashed-host"
    dead.acquire()
    dead._stop.set()  # the crashed process beats no more
    with database.transaction() as conn:
        insert_task_stubs(conn, ["t1", "t2"], utcnow())
        assert dead.claim(conn, ["t1", "t2"]) == ["t1", "t2"]
    heir = RunLock(database, "sync", stale_after_s=0.0)
    heir.acquire()
    try:
        with database.transaction() as conn:
            assert sorted(heir.claim(conn, ["t1", "t2"])) == ["t1", "t2"]
    finally:
        heir.release()


def test_lock_staleness_uses_the_database_clock_on_postgresql(
    pg_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host whose clock runs an hour ahead cannot take over a live lock on PostgreSQL."""
    holder = RunLock(pg_database, "sync")
    holder.acquire()
    try:
        monkeypatch.setattr(locks_module, "utcnow", lambda: utcnow() + timedelta(hours=1))
        skewed = RunLock(pg_database, "sync")
        skewed.host = "host-with-a-fast-clock"
        with pytest.raises(LockHeld):
            skewed.acquire()
    finally:
        holder.release()
