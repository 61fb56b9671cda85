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
    archive_and_simulator,
    bench_args,
    database_label,
    load,
    print_runs,
    r,
    run_archiver,
)


def main() -> None:
    parser = bench_args(__doc__, tasks=2000, events=5, sizes="10000 or 100000, x 20 events")
    print_runs(parser.parse_args(), run)


def run(args: argparse.Namespace) -> dict[str, object]:
    with archive_and_simulator(args) as (sim, env):
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
