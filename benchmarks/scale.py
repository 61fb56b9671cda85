"""Scale: `archiver backfill` of N tasks x E events, then a steady `sync` over the
finalized archive, then `archiver status` and `archiver report credits` at that size.
The first sync after the backfill and a second one are both reported. Prints JSON: the
peak RSS of each archiver process (``ru_maxrss`` from ``wait4``), the requests each sync
made (the simulator's counters), and every wall time.

    python benchmarks/scale.py                          # small: 2,000 tasks x 5 events
    python benchmarks/scale.py --tasks 10000 --events 20
    python benchmarks/scale.py --tasks 100000 --events 20
    python benchmarks/scale.py ... --database-url postgresql://postgres@127.0.0.1/bench

A PostgreSQL database named in --database-url is dropped and re-created for each run.
"""

from __future__ import annotations

import argparse
import json

from _bench import (
    Simulator,
    database_label,
    env_for,
    fresh_postgres,
    load,
    r,
    run_archiver,
    workdir,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="N (full: 10000, 100000)")
    parser.add_argument("--events", type=int, default=5, help="events per task (full: 20)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each printed")
    args = parser.parse_args()
    for _ in range(args.repeat):
        print(json.dumps(run(args)), flush=True)


def run(args: argparse.Namespace) -> dict[str, object]:
    with workdir() as home:
        sim = Simulator(
            ["--finish-all", "--tasks", str(args.tasks), "--events", str(args.events),
             "--seed", str(args.seed)],
            home,
        )  # fmt: skip
        try:
            if args.database_url:
                fresh_postgres(args.database_url)
            env = env_for(sim, home, args.database_url)
            run_archiver(["db", "upgrade"], env)
            sim.reset()
            backfill = run_archiver(
                ["backfill", "-q", "--concurrency", str(args.concurrency)], env, sim
            )
            backfill_requests = sim.stats()
            sim.reset()
            sync = run_archiver(["sync", "-q"], env, sim)
            sync_requests = sim.stats()
            sim.reset()
            sync_2 = run_archiver(["sync", "-q"], env, sim)
            sync_2_requests = sim.stats()
            status = run_archiver(["status", "--json"], env)
            status_2 = run_archiver(["status", "--json"], env)
            credits = run_archiver(["report", "credits", "--format", "json"], env)
            credits_2 = run_archiver(["report", "credits", "--format", "json"], env)
        finally:
            sim.close()
    reported = json.loads(status.stdout)
    return {
        "benchmark": "scale",
        "tasks": args.tasks,
        "events_per_task": args.events,
        "database": database_label(args.database_url),
        "backfill_wall_s": r(backfill.wall_s),
        "backfill_cpu_s": r(backfill.cpu_s),
        "backfill_peak_rss_mb": r(backfill.peak_rss_mb, 1),
        "backfill_requests": sum(v for k, v in backfill_requests.items() if k in ("list", "get")),
        "sync_wall_s": r(sync.wall_s),
        "sync_startup_s": r(sync.startup_s),
        "sync_requests": {k: v for k, v in sync_requests.items() if k in ("list", "get")},
        "sync_peak_rss_mb": r(sync.peak_rss_mb, 1),
        "second_sync_wall_s": r(sync_2.wall_s),
        "second_sync_requests": {k: v for k, v in sync_2_requests.items() if k in ("list", "get")},
        "status_wall_s": [r(status.wall_s), r(status_2.wall_s)],
        "status_peak_rss_mb": r(status.peak_rss_mb, 1),
        "report_credits_wall_s": [r(credits.wall_s), r(credits_2.wall_s)],
        "report_credits_peak_rss_mb": r(credits.peak_rss_mb, 1),
        "archived_tasks": reported.get("tasks"),
        "archived_events": reported.get("events"),
        "load": load(),
    }


if __name__ == "__main__":
    main()
