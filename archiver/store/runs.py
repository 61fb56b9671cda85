"""The ``sync_runs`` rows: one per ``sync`` or ``backfill``, from start to outcome."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, update

from archiver.stats import STORED_COUNTERS
from archiver.store.schema import sync_runs


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
