"""Time of one lease heartbeat (``UPDATE tasks ... WHERE lease_owner = :owner``) on a
large archive, with the ``ix_tasks_lease_owner`` index and without it.

    python benchmarks/lease_heartbeat.py                       # 500k tasks, SQLite
    python benchmarks/lease_heartbeat.py --tasks 100000 --database-url postgresql://...

The archive gets ``--tasks`` finalized tasks and ``--leased`` tasks leased to one run (a
pass's claimed work); the run's heartbeat is timed ``--repeat`` times, then again after
dropping the index. The URL's database must be empty (SQLite: a temporary file by default).
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime

from sqlalchemy import insert, text

from archiver.store.database import Database
from archiver.store.locks import RunLock
from archiver.store.schema import tasks

CHUNK = 20_000


def fill(db: Database, n_tasks: int, n_leased: int, owner: str) -> None:
    old = datetime(2025, 1, 1, tzinfo=UTC)
    for start in range(0, n_tasks, CHUNK):
        rows = [
            {
                "id": f"tsk_{i:012d}",
                "status": "done",
                "created_at": 1_700_000_000 + i,
                "first_seen_at": old,
                "finalized_at": None if i < n_leased else old,
                "lease_owner": owner if i < n_leased else None,
                "lease_until": old if i < n_leased else None,
            }
            for i in range(start, min(start + CHUNK, n_tasks))
        ]
        with db.transaction() as conn:
            conn.execute(insert(tasks), rows)


def time_heartbeats(lock: RunLock, repeat: int) -> dict[str, float]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        lock.heartbeat()
        seconds.append(time.perf_counter() - started)
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500_000)
    parser.add_argument("--leased", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url", help="an empty database (default: a SQLite temp file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        db = Database(args.database_url or f"sqlite:///{workdir}/bench.db")
        db.prepare()
        lock = RunLock(db, "sync", heartbeat_s=3600.0)  # timed directly, not by its thread
        lock.acquire()
        fill(db, args.tasks, args.leased, lock.owner)
        with db.transaction() as conn:
            conn.execute(text("ANALYZE"))
        indexed = time_heartbeats(lock, args.repeat)
        with db.transaction() as conn:
            conn.execute(text("DROP INDEX ix_tasks_lease_owner"))
        scanned = time_heartbeats(lock, args.repeat)
        lock.release()
        db.dispose()
    print(
        json.dumps(
            {
                "database": db.dialect,
                "tasks": args.tasks,
                "leased": args.leased,
                "with_index": indexed,
                "without_index": scanned,
            }
        )
    )


if __name__ == "__main__":
    main()
