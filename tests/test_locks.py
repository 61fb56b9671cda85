"""The command lock and task leases, directly (the CLI tests cover them end to end)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from archiver.exceptions import LockHeld
from archiver.store import locks as locks_module
from archiver.store.database import Database
from archiver.store.locks import RunLock
from archiver.store.schema import locks, tasks
from archiver.store.tasks import insert_task_stubs
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


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant_holder(db: Database, *, heartbeat_age_s: float, **identity: object) -> str:
    """Write a lock row as another run left it; returns its owner token."""
    me = RunLock(db, "sync")
    now = utcnow()
    row = {
        "name": "sync",
        "owner": "planted-owner",
        "host": me.host,
        "pid": _dead_pid(),
        "boot_id": me.boot_id,
        "pid_namespace": me.pid_namespace,
        "acquired_at": now - timedelta(seconds=heartbeat_age_s),
        "heartbeat_at": now - timedelta(seconds=heartbeat_age_s),
        **identity,
    }
    with db.transaction() as conn:
        conn.execute(locks.insert().values(row))
    return str(row["owner"])


def test_this_process_knows_its_boot_and_pid_namespace() -> None:
    """On Linux a run records the kernel's boot id and its pid namespace in its identity."""
    assert locks_module.boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert locks_module.pid_namespace() == os.readlink("/proc/self/ns/pid")
    assert re.fullmatch(r"pid:\[\d+\]", locks_module.pid_namespace() or "")


@pytest.mark.parametrize(
    ("identity", "taken_while_fresh"),
    [
        ({}, True),
        ({"pid_namespace": "pid:[1]"}, False),
        ({"boot_id": "00000000-0000-0000-0000-000000000000"}, False),
        ({"boot_id": None, "pid_namespace": None}, False),
        ({"host": "another-host"}, False),
    ],
    ids=["same-namespace", "other-namespace", "other-boot", "unknown-identity", "other-host"],
)
def test_dead_pid_takeover_only_when_host_boot_and_pid_namespace_match(
    database: Database, identity: dict[str, object], taken_while_fresh: bool
) -> None:
    """A dead pid frees a fresh lock only on the same host, boot and pid namespace; any
    other holder keeps it until its heartbeat is stale."""
    owner = _plant_holder(database, heartbeat_age_s=0.0, **identity)
    heir = RunLock(database, "sync", stale_after_s=60.0)
    try:
        if taken_while_fresh:
            heir.acquire()
        else:
            with pytest.raises(LockHeld):
                heir.acquire()
            # The same holder, silent for longer than stale_after, is taken over.
            with database.transaction() as conn:
                conn.execute(
                    update(locks)
                    .where(locks.c.owner == owner)
                    .values(heartbeat_at=utcnow() - timedelta(seconds=61))
                )
            heir.acquire()
        with database.transaction() as conn:
            row = conn.execute(select(locks).where(locks.c.name == "sync")).one()
        assert (row.owner, row.boot_id, row.pid_namespace) == (
            heir.owner,
            heir.boot_id,
            heir.pid_namespace,
        )
    finally:
        heir.release()


def test_a_live_pid_in_the_same_namespace_keeps_its_lock(database: Database) -> None:
    """Same host, boot and namespace but a live pid (this very process): LockHeld."""
    _plant_holder(database, heartbeat_age_s=0.0, pid=os.getpid())
    with pytest.raises(LockHeld):
        RunLock(database, "sync").acquire()


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_failed_heartbeats_are_logged_with_their_reason(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failed beat logs a warning naming the database error; a working beat resets it."""
    caplog.set_level(logging.WARNING, logger="archiver.store.locks")
    lock = RunLock(database, "sync", heartbeat_s=0.05)
    lock.acquire()
    try:
        with database.transaction() as conn:  # the heartbeat's table vanishes under it
            conn.execute(text("ALTER TABLE locks RENAME TO locks_away"))
        try:
            assert _wait_for(lambda: lock.missed_beats >= 2)
        finally:
            with database.transaction() as conn:
                conn.execute(text("ALTER TABLE locks_away RENAME TO locks"))
        assert _wait_for(lambda: lock.missed_beats == 0)
    finally:
        lock.release()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) >= 2
    for record in warnings:
        message = record.getMessage()
        assert message.startswith("heartbeat of the sync lock failed")
        assert "locks" in message.split("):", 1)[1]  # the driver's reason names the table
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_lost_lock_is_logged_as_an_error_once(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The first beat after another run took the lock over logs one error and sets lost."""
    caplog.set_level(logging.WARNING, logger="archiver.store.locks")
    frozen = RunLock(database, "sync", stale_after_s=0.0)
    frozen.host = "frozen-host"
    frozen.acquire()
    frozen._stop.set()  # frozen: its thread beats no more
    heir = RunLock(database, "sync", stale_after_s=0.0)
    heir.acquire()
    try:
        frozen.beat_once()
        frozen.beat_once()
        assert frozen.lost and not heir.lost
    finally:
        heir.release()
        frozen.release()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith("lost the sync lock: another run took it over")


def test_the_heartbeat_never_waits_for_a_task_row_another_transaction_holds(
    pg_database: Database,
) -> None:
    """A beat skips leased rows locked by a save in flight (which sets the lease itself)
    and renews the rest: waiting for them is how a beat and a group commit deadlocked."""
    lock = RunLock(pg_database, "sync")
    lock.acquire()
    lock._stop.set()  # beats are driven by hand below
    try:
        with pg_database.transaction() as conn:
            insert_task_stubs(conn, ["busy", "idle"], utcnow())
            assert sorted(lock.claim(conn, ["busy", "idle"])) == ["busy", "idle"]
            conn.execute(update(tasks).values(lease_until=utcnow()))  # both about to expire
        saving = pg_database.engine.connect()
        saving.begin()
        saving.execute(text("SELECT 1 FROM tasks WHERE id = 'busy' FOR NO KEY UPDATE"))
        beat = threading.Thread(target=lock.beat_once)
        beat.start()
        beat.join(timeout=30)
        waited = beat.is_alive()
        saving.rollback()
        saving.close()
        beat.join()
        assert not waited and lock.missed_beats == 0
        with pg_database.reading() as conn:
            until = dict(conn.execute(select(tasks.c.id, tasks.c.lease_until)).all())
        assert until["idle"] > until["busy"]  # renewed; the held row was left as it was
    finally:
        lock.release()
