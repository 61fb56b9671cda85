"""CPU-bound throughput at L=0: `archiver backfill` against a zero-latency simulator in
its own process; events archived per second of wall time and per archiver CPU-second.

    python benchmarks/throughput.py                     # small: 300 tasks x 50 events
    python benchmarks/throughput.py --tasks 2000 --events 50
    python benchmarks/throughput.py ... --database-url postgresql://postgres@127.0.0.1/bench

Both processes share the machine ("simulator included"): ``events_per_s`` is over the
archiver's wall time, ``events_per_cpu_s`` over the archiver child's own CPU (``wait4``
rusage), and ``events_per_total_cpu_s`` counts the simulator's CPU during the run too.
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
    run_archiver,
)


def main() -> None:
    parser = bench_args(__doc__, tasks=300, events=50, sizes="2000 x 50")
    print_runs(parser.parse_args(), run)


def run(args: argparse.Namespace) -> dict[str, object]:
    with archive_and_simulator(args) as (sim, env):
        sim_cpu_before = sim.cpu_s()
        proc = run_archiver(["backfill", "-q", "--concurrency", str(args.concurrency)], env, sim)
        sim_cpu = sim.cpu_s() - sim_cpu_before
    events = args.tasks * args.events
    return {
        "benchmark": "throughput",
        "tasks": args.tasks,
        "events_per_task": args.events,
        "concurrency": args.concurrency,
        "database": database_label(args.database_url),
        "wall_s": r(proc.wall_s),
        "startup_s": r(proc.startup_s),
        "events_per_s": round(events / proc.wall_s),
        "archiver_cpu_s": r(proc.cpu_s),
        "events_per_cpu_s": round(events / proc.cpu_s),
        "simulator_cpu_s": r(sim_cpu),
        "events_per_total_cpu_s": round(events / (proc.cpu_s + sim_cpu)),
        "archiver_cpu_ms_per_task": r(proc.cpu_s * 1000 / args.tasks),
        "peak_rss_mb": r(proc.peak_rss_mb, 1),
        "load": load(),
    }


if __name__ == "__main__":
    main()
