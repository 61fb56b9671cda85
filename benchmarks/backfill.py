"""Backfill at the latency bound: `archiver backfill` against a simulator with added
latency, each in its own process; prints JSON figures.

    python benchmarks/backfill.py                       # small: 200 tasks x 20 events
    python benchmarks/backfill.py --tasks 2000 --events 50 --latency-ms 50 --concurrency 32
    python benchmarks/backfill.py ... --database-url postgresql://postgres@127.0.0.1/bench

The ideal is N x L / concurrency (every Get Task in flight all the time) plus the listing
that cannot overlap with it, one List Tasks round trip before the first task is known (the
engine polls while it pages). ``efficiency`` = ideal / wall, wall being the whole process
from its start to its exit. ``ideal_serial_listing_s`` adds every listing page instead
(the bound if listing did not overlap with polling). Start-up (process start to the
simulator's first API request, by wall-clock timestamps of both processes) is reported
separately, and ``efficiency_after_startup`` leaves it out of the wall time.
A PostgreSQL database named in --database-url is dropped and re-created for each run.
"""

from __future__ import annotations

import argparse

from _bench import (
    archive_and_simulator,
    bench_args,
    database_label,
    load,
    print_runs,
    r,
    request_timeline,
    run_archiver,
)


def main() -> None:
    parser = bench_args(__doc__, tasks=200, events=20, sizes="2000 x 50")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="per request, L")
    parser.add_argument(
        "--waits", action="store_true", help="add where the workers waited (request timeline)"
    )
    print_runs(parser.parse_args(), run)


def run(args: argparse.Namespace) -> dict[str, object]:
    with archive_and_simulator(args, "--latency-ms", str(args.latency_ms)) as (sim, env):
        sim_cpu_before = sim.cpu_s()
        proc = run_archiver(["backfill", "-q", "--concurrency", str(args.concurrency)], env, sim)
        stats = sim.stats()
        sim_cpu = sim.cpu_s() - sim_cpu_before
        waits = {"waits": request_timeline(sim, proc, args.concurrency)} if args.waits else {}
    latency = args.latency_ms / 1000
    lists = stats.get("list", 0)
    gets = stats.get("get", 0)
    polling = args.tasks * latency / args.concurrency
    ideal = polling + latency
    serial = polling + lists * latency
    after_startup = proc.wall_s - (proc.startup_s or 0.0)
    return {
        "benchmark": "backfill",
        "tasks": args.tasks,
        "events_per_task": args.events,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "database": database_label(args.database_url),
        "wall_s": r(proc.wall_s),
        "startup_s": r(proc.startup_s),
        "list_requests": lists,
        "get_requests": gets,
        "events_per_s": round(args.tasks * args.events / proc.wall_s, 1),
        "archiver_cpu_s": r(proc.cpu_s),
        "archiver_cpu_ms_per_task": r(proc.cpu_s * 1000 / args.tasks),
        "simulator_cpu_s": r(sim_cpu),
        "peak_rss_mb": r(proc.peak_rss_mb, 1),
        "ideal_s": r(ideal),
        "efficiency": r(ideal / proc.wall_s),
        "efficiency_after_startup": r(ideal / after_startup),
        "ideal_serial_listing_s": r(serial),
        "efficiency_serial_listing": r(serial / proc.wall_s),
        "load": load(),
        **waits,
    }


if __name__ == "__main__":
    main()
