"""`archiver serve` response times on a large archive; prints JSON figures per page and
database (not asserted anywhere).

    python benchmarks/web.py --tasks 100000
    python benchmarks/web.py --tasks 1000000 --no-postgres      # keyset pages at 1M

Rows are generated with plain INSERTs (no simulator): tasks spread over a year with
mixed statuses, devices, text and object outputs, a few events each, artifacts on half
of them, one task with 5,000 events, and one finished sync run. The real `archiver serve`
runs in its own process on 127.0.0.1; each page is fetched a few times after a warm-up
and the median, 95th percentile and maximum wall times are reported. PostgreSQL gets a
fresh database on the server named by --postgres-admin-url, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, select, text

from archiver.store.database import Database
from archiver.store.schema import artifacts, sync_runs, task_events, tasks
from archiver.web.queries import encode_cursor

BIN = Path(sys.executable).with_name("archiver")
STATUSES = ["done"] * 14 + ["failed"] * 3 + ["cancelled"] * 2 + ["running"]
DEVICES = ["desktop", "mobile", "desktop-lg"]
BATCH = 10_000
BIG_TASK = "tsk_big_5000_events"
START = datetime(2025, 1, 1, tzinfo=UTC)


def generate(db: Database, n_tasks: int, events_per_task: int, big_events: int) -> None:
    rng = random.Random(7)
    now = datetime(2026, 1, 2, tzinfo=UTC)
    with db.transaction() as conn:
        for start in range(0, n_tasks, BATCH):
            task_rows, event_rows, artifact_rows = [], [], []
            for i in range(start, min(start + BATCH, n_tasks)):
                task_id = BIG_TASK if i == n_tasks - 1 else f"tsk_{i:08d}"
                created = START + timedelta(seconds=i * 365 * 86400 / n_tasks)
                status = rng.choice(STATUSES)
                output: Any = (
                    f"Found {rng.randint(0, 99)} results for query {i}"
                    if i % 3
                    else {"items": [rng.randint(0, 9) for _ in range(5)], "page": i}
                )
                n_events = big_events if task_id == BIG_TASK else events_per_task
                task_rows.append(
                    {
                        "id": task_id,
                        "status": status,
                        "device": rng.choice(DEVICES),
                        "credits_used": rng.randint(0, 500),
                        "output": output if status != "running" else None,
                        "created_at": int(created.timestamp()),
                        "created_at_utc": created,
                        "first_seen_at": created,
                        "finalized_at": None if status == "running" else created,
                        "event_count": n_events,
                    }
                )
                for e in range(n_events):
                    stamp = int(created.timestamp() * 1000) + e * 700
                    event_rows.append(
                        {
                            "task_id": task_id,
                            "event_key": f"k{e}",
                            "event_id": f"ev_{i}_{e}",
                            "name": ("browser_action", "tool_call", "session_action")[e % 3],
                            "payload": {"name": "click", "input": {"x": e, "y": i % 700}},
                            "timestamp": stamp,
                            "timestamp_utc": datetime.fromtimestamp(stamp / 1000, UTC),
                            "archived_at": now,
                        }
                    )
                if i % 2 == 0 and status != "running":
                    artifact_rows.append(
                        {
                            "task_id": task_id,
                            "kind": "recording",
                            "state": "stored",
                            "blob_url": f"file:///nonexistent/tasks/x/{task_id}/recording.mp4",
                            "size_bytes": 1_000_000,
                            "content_type": "video/mp4",
                        }
                    )
            conn.execute(insert(tasks), task_rows)
            conn.execute(insert(task_events), event_rows)
            if artifact_rows:
                conn.execute(insert(artifacts), artifact_rows)
        conn.execute(
            insert(sync_runs).values(
                run_id="bench",
                command="sync",
                host="bench",
                pid=1,
                started_at=now,
                finished_at=now,
                outcome="ok",
            )
        )
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))


def middle_cursor(db: Database, n_tasks: int) -> str:
    """The keyset of the row half-way down the newest-first list (a deep page)."""
    with db.reading() as conn:
        row = conn.execute(
            select(tasks.c.created_at_utc, tasks.c.id)
            .order_by(tasks.c.created_at_utc.desc(), tasks.c.id.desc())
            .offset(n_tasks // 2)
            .limit(1)
        ).one()
    return encode_cursor(row.created_at_utc, row.id)


def pages(cursor: str) -> dict[str, str]:
    return {
        "tasks": "tasks",
        "tasks_deep_page": f"tasks?after={cursor}",
        "tasks_status_failed": "tasks?status=failed",
        "tasks_device_month": "tasks?device=mobile&since=2025-06-01&until=2025-06-30",
        "tasks_by_credits": "tasks?sort=credits",
        "tasks_output_text": "tasks?q=results+for+query+4242",
        "task_5000_events": f"task?id={BIG_TASK}",
        "costs_by_day": "costs",
        "costs_by_week_status": "costs?by=week&group=status",
        "costs_by_month_device": "costs?by=month&group=device",
        "health": "health",
        "healthz": "healthz",
        "metrics": "metrics",
    }


def measure(database_url: str, cursor: str, repeat: int) -> dict[str, Any]:
    proc = subprocess.Popen(
        [str(BIN), "serve", "--database-url", database_url, "--port", "0", "--max-age", "3650d"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert proc.stdout is not None
        match = re.search(r" at (http://\S+/)$", proc.stdout.readline().strip())
        assert match, "archiver serve printed no address"
        base = match.group(1)
        figures: dict[str, Any] = {}
        with httpx.Client(timeout=120) as client:
            for name, path in pages(cursor).items():
                for _ in range(2):  # warm-up: connection pool, caches
                    client.get(base + path)
                times, size, status = [], 0, 0
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    response = client.get(base + path)
                    times.append((time.perf_counter() - t0) * 1000)
                    size, status = len(response.content), response.status_code
                times.sort()
                figures[name] = {
                    "status": status,
                    "median_ms": round(statistics.median(times), 1),
                    "p95_ms": round(times[max(0, round(0.95 * len(times)) - 1)], 1),
                    "max_ms": round(times[-1], 1),
                    "bytes": size,
                }
        return figures
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run(database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    db = Database(database_url)
    db.prepare()
    t0 = time.perf_counter()
    generate(db, args.tasks, args.events_per_task, args.big_events)
    generated_s = time.perf_counter() - t0
    cursor = middle_cursor(db, args.tasks)
    db.dispose()
    return {
        "generate_s": round(generated_s, 1),
        "pages": measure(database_url, cursor, args.repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--events-per-task", type=int, default=3)
    parser.add_argument("--big-events", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "ARCHIVER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test"
        ),
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "tasks": args.tasks,
        "events": (args.tasks - 1) * args.events_per_task + args.big_events,
        "repeat": args.repeat,
        "databases": {},
    }
    with tempfile.TemporaryDirectory(prefix="archiver-web-bench-") as folder:
        results["databases"]["sqlite"] = run(f"sqlite:///{folder}/bench.db", args)
    if not args.no_postgres:
        admin_url = args.postgres_admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        name = f"archiver_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = admin.url.set(database=name).render_as_string(hide_password=False)
            results["databases"]["postgresql"] = run(url, args)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
