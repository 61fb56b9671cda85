"""Who may work on what: the per-command run lock and the per-task leases.

This is the one place where work is claimed. A command lock (``sync``, ``backfill``)
keeps two runs of the same command apart; a task lease keeps any two runs (a ``sync`` and
a long ``backfill``, or in future several ``sync`` workers) off the same task at the same
time. Both live in the database, so they work across processes on one host (SQLite) and
across hosts (PostgreSQL). A heartbeat thread keeps them fresh; a holder that is provably
gone (same host, dead pid) or whose heartbeat is stale loses them, and every takeover is a
conditional UPDATE, so two live runs can never both win.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, exists, func, or_, select, update

from archiver.exceptions import ArchiverError, LockHeld
from archiver.store.database import Database
from archiver.store.engines import dialect_insert
from archiver.store.schema import locks, sync_runs, tasks
from archiver.timestamps import aware, utcnow

DEFAULT_HEARTBEAT_S = 10.0
#: A lock or lease whose heartbeat is older than this is taken over.
DEFAULT_STALE_AFTER_S = 90.0
LEASE_CHUNK = 500

log = logging.getLogger(__name__)


def new_owner_token() -> str:
    return uuid.uuid4().hex


def _read_identity(read: Callable[[], str]) -> str | None:
    try:
        return read().strip() or None
    except OSError:  # no /proc (not Linux, or hidden): the pid cannot be judged
        return None


def boot_id() -> str | None:
    """This boot of the kernel: a pid from before a reboot names another process."""
    return _read_identity(lambda: Path("/proc/sys/kernel/random/boot_id").read_text())


def pid_namespace() -> str | None:
    """This process's pid namespace (``pid:[inode]``): containers that share a hostname
    but not a pid namespace see different processes behind the same pid."""
    return _read_identity(lambda: os.readlink("/proc/self/ns/pid"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Holder:
    owner: str
    host: str
    pid: int
    acquired_at: datetime
    heartbeat_at: datetime
    #: None for a holder written by an archiver before migration ``locks`` or without /proc.
    boot_id: str | None = None
    pid_namespace: str | None = None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC"


@dataclass(frozen=True)
class Observer:
    """Where a judgement of a holder is made: this host, boot and pid namespace."""

    host: str
    boot_id: str | None
    pid_namespace: str | None

    @classmethod
    def here(cls) -> Observer:
        return cls(socket.gethostname(), boot_id(), pid_namespace())

    def sees_pids_of(self, holder: Holder) -> bool:
        """Whether the holder's pid names the same process here: same host, same boot and
        same pid namespace, each known. Otherwise only its heartbeat can tell it is gone."""
        mine = (self.host, self.boot_id, self.pid_namespace)
        theirs = (holder.host, holder.boot_id, holder.pid_namespace)
        return None not in mine and mine == theirs


def why_gone(
    holder: Holder, now: datetime, observer: Observer, stale_after: timedelta
) -> str | None:
    """Why the holder of a lock is gone (its process has exited on this host, or its
    heartbeat is older than ``stale_after``), or None while it may be alive."""
    if observer.sees_pids_of(holder) and not _pid_alive(holder.pid):
        return f"its process (pid {holder.pid} on {holder.host}) is gone"
    silent = now - holder.heartbeat_at
    if silent > stale_after:
        return (
            f"its heartbeat stopped {silent.total_seconds():.0f} s ago "
            f"(pid {holder.pid} on {holder.host})"
        )
    return None


def holder_of(row: Any) -> Holder:
    """The holder named by a ``locks`` row."""
    return Holder(
        owner=row.owner,
        host=row.host,
        pid=row.pid,
        acquired_at=aware(row.acquired_at),
        heartbeat_at=aware(row.heartbeat_at),
        boot_id=row.boot_id,
        pid_namespace=row.pid_namespace,
    )


def database_now(conn: Connection) -> datetime:
    """The time by the database server's clock on PostgreSQL, so that runs on hosts whose
    clocks disagree still judge heartbeats and leases alike; the local clock on SQLite,
    where every run shares one host."""
    if conn.dialect.name == "postgresql":
        value = conn.scalar(select(func.clock_timestamp()))
        assert isinstance(value, datetime)
        return aware(value)
    return utcnow()


class RunLock:
    """The lock of one command over one archive, plus the leases of the tasks it works on."""

    def __init__(
        self,
        db: Database,
        name: str,
        *,
        owner: str | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        self.db = db
        self.name = name
        self.owner = owner or new_owner_token()
        self.observer = Observer.here()
        self.host = self.observer.host
        self.pid = os.getpid()
        self.boot_id = self.observer.boot_id
        self.pid_namespace = self.observer.pid_namespace
        self.heartbeat_s = heartbeat_s
        self.stale_after = timedelta(seconds=stale_after_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False
        #: Set when another run took the lock over from this one (heartbeat found it gone).
        self.lost = False
        #: Heartbeats that failed in a row (reset by the next one that works).
        self.missed_beats = 0

    # -- the command lock ------------------------------------------------------------

    def acquire(self, *, wait_s: float = 0.0, check: Callable[[], None] | None = None) -> None:
        """Take the lock, or raise LockHeld naming the holder (after ``wait_s`` seconds).
        ``check`` is called while waiting and may raise to give up (a stop signal)."""
        deadline = time.monotonic() + wait_s
        while True:
            holder = self._try_acquire()
            if holder is None:
                self.held = True
                self._start_heartbeat()
                return
            if time.monotonic() >= deadline:
                raise LockHeld(
                    f"another `archiver {self.name}` holds the lock on this archive "
                    f"({holder.describe()}); wait for it to finish, or pass --wait-lock SECONDS."
                )
            if check is not None:
                check()
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
            if check is not None:
                check()

    def _try_acquire(self) -> Holder | None:
        with self.db.transaction() as conn:
            now = database_now(conn)
            row = {
                "name": self.name,
                "owner": self.owner,
                "host": self.host,
                "pid": self.pid,
                "boot_id": self.boot_id,
                "pid_namespace": self.pid_namespace,
                "acquired_at": now,
                "heartbeat_at": now,
            }
            inserted = conn.execute(
                dialect_insert(conn, locks)
                .values(row)
                .on_conflict_do_nothing(index_elements=["name"])
            ).rowcount
            current = None
            if inserted != 1:  # taken, or a driver that does not count (rowcount -1)
                current = conn.execute(select(locks).where(locks.c.name == self.name)).first()
                if current is None:  # released between our INSERT and SELECT: try again
                    return self._holder_placeholder(now)
            if current is None or current.owner == self.owner:
                self._clean_up_dead_holders(conn, now)
                return None
            holder = holder_of(current)
            reason = why_gone(holder, now, self.observer, self.stale_after)
            if reason is None:
                return holder
            taken = conn.execute(
                update(locks)
                .where(locks.c.name == self.name, locks.c.owner == holder.owner)
                .values(row)
            ).rowcount
            if taken != 1:
                return holder
            self._clean_up_after(conn, self.name, holder.owner, now, reason)
            self._clean_up_dead_holders(conn, now)
            return None

    def _holder_placeholder(self, now: datetime) -> Holder:
        return Holder(owner="", host="?", pid=0, acquired_at=now, heartbeat_at=now)

    def _clean_up_dead_holders(self, conn: Connection, now: datetime) -> None:
        """The locks of other commands whose holders are gone are freed with their leases
        and runs, so this run finds their tasks free at once (a dead ``sync``'s leases
        would otherwise keep a ``backfill`` off its tasks until they expire)."""
        for row in conn.execute(select(locks).where(locks.c.name != self.name)).all():
            holder = holder_of(row)
            reason = why_gone(holder, now, self.observer, self.stale_after)
            if reason is None:
                continue
            freed = conn.execute(
                locks.delete().where(locks.c.name == row.name, locks.c.owner == holder.owner)
            ).rowcount
            if freed == 1:
                self._clean_up_after(conn, row.name, holder.owner, now, reason)

    def _clean_up_after(
        self, conn: Connection, name: str, dead_owner: str, now: datetime, why: str
    ) -> None:
        """A crashed holder's leases are freed and its run is recorded as crashed."""
        freed = conn.execute(
            update(tasks)
            .where(tasks.c.lease_owner == dead_owner)
            .values(lease_owner=None, lease_until=None)
        ).rowcount
        recorded = conn.execute(
            update(sync_runs)
            .where(sync_runs.c.run_id == dead_owner, sync_runs.c.outcome == "running")
            .values(outcome="crashed", finished_at=now, message=f"the process died mid-run: {why}")
        ).rowcount
        log.warning(
            "the `archiver %s` that held its lock died mid-work (%s): lock and task leases "
            "freed (%d)%s",
            name,
            why,
            max(freed, 0),
            ", its run recorded as crashed" if recorded == 1 else "",
        )

    def release(self) -> None:
        """Stop the heartbeat, free every lease of this run and the lock itself."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.held:
            return
        with self.db.transaction() as conn:
            conn.execute(
                update(tasks)
                .where(tasks.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None)
            )
            conn.execute(
                locks.delete().where(locks.c.name == self.name, locks.c.owner == self.owner)
            )
        self.held = False

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # -- heartbeat -------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(
            target=self._beat, name=f"archiver-{self.name}-heartbeat", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.beat_once()

    def beat_once(self) -> None:
        """One heartbeat of the thread: a failure is logged, never raised. A missed beat
        is harmless unless they keep failing for stale_after; then another run may take
        the lock over, which the next beat that works reports."""
        try:
            self.heartbeat()
        except Exception as exc:
            self.missed_beats += 1
            reason = str(exc) if isinstance(exc, ArchiverError) else f"{type(exc).__name__}: {exc}"
            log.warning(
                "heartbeat of the %s lock failed (%d in a row; another run may take the lock "
                "over after %.0f s without one): %s",
                self.name,
                self.missed_beats,
                self.stale_after.total_seconds(),
                reason,
            )
        else:
            self.missed_beats = 0

    def heartbeat(self) -> None:
        with self.db.transaction() as conn:
            now = database_now(conn)
            kept = conn.execute(
                update(locks)
                .where(locks.c.name == self.name, locks.c.owner == self.owner)
                .values(heartbeat_at=now)
            ).rowcount
            if kept == 0 and self.held and not self.lost:
                # Taken over (our heartbeat went stale, e.g. a long freeze): stop starting
                # work; task leases still keep every task to one run at a time.
                self.lost = True
                log.error(
                    "lost the %s lock: another run took it over after this run's heartbeat "
                    "went stale; stopping after the work in flight",
                    self.name,
                )
            # Rows another transaction holds are skipped (PostgreSQL; SQLite locks the
            # whole database instead): they are this run's saves or claims, which set the
            # lease themselves, or another run's attempt on a lease still fresh for a beat.
            # Waiting for them instead, in whatever order the UPDATE visits rows, made the
            # heartbeat and a group commit deadlock: one of them aborted after a 1 s stall.
            mine = (
                select(tasks.c.id)
                .where(tasks.c.lease_owner == self.owner)
                .with_for_update(skip_locked=True)
            )
            conn.execute(
                update(tasks).where(tasks.c.id.in_(mine)).values(lease_until=now + self.stale_after)
            )

    # -- task leases -----------------------------------------------------------------

    def claim(self, conn: Connection, task_ids: Sequence[str]) -> list[str]:
        """Lease the given tasks to this run; returns the ids it got (others are busy)."""
        now = database_now(conn)
        got: list[str] = []
        for start in range(0, len(task_ids), LEASE_CHUNK):
            chunk = list(task_ids[start : start + LEASE_CHUNK])
            result = conn.execute(
                update(tasks)
                .where(
                    tasks.c.id.in_(chunk),
                    # An erased task (a tombstone) is never worked on again.
                    tasks.c.erased_at.is_(None),
                    or_(
                        tasks.c.lease_owner.is_(None),
                        tasks.c.lease_owner == self.owner,
                        and_(tasks.c.lease_until.is_not(None), tasks.c.lease_until < now),
                        # A live run holds a lock while it holds leases (it frees both in
                        # one transaction): a lease whose owner holds none is left over.
                        ~exists().where(locks.c.owner == tasks.c.lease_owner),
                    ),
                )
                .values(lease_owner=self.owner, lease_until=now + self.stale_after)
                .returning(tasks.c.id)
            )
            # RETURNING comes in no particular order; the caller's order (least recently
            # polled first) is kept, so --max-runtime cuts the newest work, not the oldest.
            leased = {row[0] for row in result}
            got.extend(task_id for task_id in dict.fromkeys(chunk) if task_id in leased)
        return got

    def leased_elsewhere(self, conn: Connection, task_ids: Sequence[str]) -> int:
        """How many of these tasks another run holds (after :meth:`claim` passed them by)."""
        busy = 0
        for start in range(0, len(task_ids), LEASE_CHUNK):
            chunk = list(dict.fromkeys(task_ids[start : start + LEASE_CHUNK]))
            busy += (
                conn.scalar(
                    select(func.count()).where(
                        tasks.c.id.in_(chunk),
                        tasks.c.lease_owner.is_not(None),
                        tasks.c.lease_owner != self.owner,
                    )
                )
                or 0
            )
        return busy

    def release_tasks(self, conn: Connection, task_ids: Sequence[str]) -> None:
        for start in range(0, len(task_ids), LEASE_CHUNK):
            conn.execute(
                update(tasks)
                .where(
                    tasks.c.id.in_(list(task_ids[start : start + LEASE_CHUNK])),
                    tasks.c.lease_owner == self.owner,
                )
                .values(lease_owner=None, lease_until=None)
            )


def gone_runs(conn: Connection, run_ids: Sequence[str]) -> dict[str, str]:
    """Of these runs, recorded as ``running``, the ones whose process is gone, with why:
    judged as the next run would judge them (a live run holds its command's lock until
    its row is finished), without changing anything, so read-only commands can show them
    as ``crashed`` at once."""
    if not run_ids:
        return {}
    now = database_now(conn)
    observer = Observer.here()
    held = {
        row.owner: holder_of(row)
        for row in conn.execute(select(locks).where(locks.c.owner.in_(list(run_ids))))
    }
    gone: dict[str, str] = {}
    for run_id in run_ids:
        holder = held.get(run_id)
        if holder is None:
            gone[run_id] = "it no longer holds its command's lock"
            continue
        reason = why_gone(holder, now, observer, timedelta(seconds=DEFAULT_STALE_AFTER_S))
        if reason is not None:
            gone[run_id] = reason
    return gone


def leased_task_ids(conn: Connection) -> list[str]:
    """The tasks a live run holds (their owner holds a lock): work may be in flight on them."""
    return list(
        conn.scalars(
            select(tasks.c.id).where(
                tasks.c.lease_owner.is_not(None),
                exists().where(locks.c.owner == tasks.c.lease_owner),
            )
        )
    )
