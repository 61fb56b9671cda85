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
    parser.add_argument("--tasks", type=int, default=300, help="N (full size: 2000)")
    parser.add_argument("--events", type=int, default=50, help="events per task")
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
            sim_cpu_before = sim.cpu_s()
            proc = run_archiver(
                ["backfill", "-q", "--concurrency", str(args.concurrency)], env, sim
            )
            sim_cpu = sim.cpu_s() - sim_cpu_before
        finally:
            sim.close()
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
