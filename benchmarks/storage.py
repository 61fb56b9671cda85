"""Storage micro-benchmark: one batch insert of N events through the real db functions
(``archiver.store.events.insert_events``: event-key hashing, JSON serialisation, bind processing,
executemany, commit) into a fresh, migrated archive; rows per second. Prints JSON.

    python benchmarks/storage.py                        # 20,000 events (400 tasks x 50)
    python benchmarks/storage.py --events 200000
    python benchmarks/storage.py --database-url postgresql://postgres@127.0.0.1/bench

Events come from the simulator's scenario (realistic payloads), parsed with the real
models (``parse_task``); parsing is timed separately, and so is computing the event keys
(``hash_s``; with the older models, whose key is a property, the insert computes the keys
again, so there ``insert_s`` includes them). A PostgreSQL
database named in --database-url is dropped and re-created for each run.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from _bench import database_label, fresh_postgres, load, r, workdir
from sqlalchemy import func, select

from archiver import models
from archiver.models import parse_task
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.database import Database
from archiver.store.events import insert_events
from archiver.store.schema import task_events
from archiver.store.tasks import insert_new_tasks
from archiver.timestamps import utcnow

PER_TASK = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="rows in the one batch")
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each printed")
    args = parser.parse_args()
    n_tasks = max(1, args.events // PER_TASK)
    sim = Simulator(SimulatorConfig(seed=3, tasks=n_tasks, events_per_task=PER_TASK))
    sim.finish_all()
    truth = sim.truth()
    for _ in range(args.repeat):
        print(json.dumps(run(args, truth)), flush=True)


def _keyed(events: list[Any]) -> Any:
    """The events as insert_events takes them: with their keys where the models compute
    keys up front (``keyed_events``, after the event-identity change), else as they are
    (the key is then a property computed inside the insert, timed here once apart)."""
    keyed = getattr(models, "keyed_events", None)
    if keyed is not None:
        return keyed(events)
    for ev in events:
        ev.key  # noqa: B018 - the hashing alone, timed
    return events


def run(args: argparse.Namespace, truth: dict[str, dict[str, object]]) -> dict[str, object]:
    started = time.perf_counter()
    tasks = [
        parse_task({**item["task"], "events": item["events"]}, context="bench")  # type: ignore[dict-item]
        for item in truth.values()
    ]
    parse_s = time.perf_counter() - started
    rows = sum(len(t.events or []) for t in tasks)
    started = time.perf_counter()
    batches = [(t.id, _keyed(t.events or [])) for t in tasks]
    hash_s = time.perf_counter() - started
    with workdir() as home:
        url = args.database_url or f"sqlite:///{home}/storage.db"
        if args.database_url:
            fresh_postgres(url)
        database = Database(url)
        database.prepare()
        with database.transaction() as conn:
            insert_new_tasks(conn, tasks, utcnow())
        started = time.perf_counter()
        cpu = time.process_time()
        with database.transaction() as conn:
            insert_events(conn, batches, utcnow())
        insert_s = time.perf_counter() - started
        insert_cpu = time.process_time() - cpu
        with database.reading() as conn:
            stored = conn.scalar(select(func.count()).select_from(task_events))
        database.dispose()
    if stored != rows:
        raise SystemExit(f"stored {stored} rows, expected {rows}")
    return {
        "benchmark": "storage",
        "database": database_label(args.database_url),
        "rows": rows,
        "insert_s": r(insert_s),
        "rows_per_s": round(rows / insert_s),
        "insert_cpu_s": r(insert_cpu),
        "rows_per_cpu_s": round(rows / insert_cpu),
        "hash_s": r(hash_s),
        "parse_s": r(parse_s),
        "parse_rows_per_s": round(rows / parse_s),
        "load": load(),
    }


if __name__ == "__main__":
    main()
