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
    parser.add_argument("--tasks", type=int, default=200, help="N (full size: 2000)")
    parser.add_argument("--events", type=int, default=20, help="events per task (full: 50)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="per request, L")
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
            [
                "--finish-all",
                "--tasks",
                str(args.tasks),
                "--events",
                str(args.events),
                "--latency-ms",
                str(args.latency_ms),
                "--seed",
                str(args.seed),
            ],
            home,
        )
        try:
            if args.database_url:
                fresh_postgres(args.database_url)
            env = env_for(sim, home, args.database_url)
            run_archiver(["db", "upgrade"], env)
            sim.reset()
            sim_cpu_before = sim.cpu_s()
            proc = run_archiver(
                ["backfill", "-q", "--concurrency", str(args.concurrency)], env, sim
            )
            stats = sim.stats()
            sim_cpu = sim.cpu_s() - sim_cpu_before
        finally:
            sim.close()
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
    }


if __name__ == "__main__":
    main()
