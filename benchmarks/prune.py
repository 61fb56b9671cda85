"""Governance at scale: after a `backfill` of N tasks x E events, how long `archiver
forget --matching TEXT` takes to search the whole archive (its dry run), and how
`archiver prune --only events --yes` removes every event in batches: wall and CPU time,
peak RSS, and the wall time of a `sync` run beside it (it waits at most for one batch).

    python benchmarks/prune.py                          # small: 2,000 tasks x 20 events
    python benchmarks/prune.py --tasks 100000 --events 20
    python benchmarks/prune.py ... --database-url postgresql://postgres@127.0.0.1/bench

A PostgreSQL database named in --database-url is dropped and re-created for each run.
"""

from __future__ import annotations

import argparse
import subprocess
import threading
import time

from _bench import (
    BIN,
    archive_and_simulator,
    bench_args,
    database_label,
    load,
    print_runs,
    r,
    run_archiver,
)


def main() -> None:
    parser = bench_args(__doc__, tasks=2000, events=20, sizes="100000 x 20")
    print_runs(parser.parse_args(), run)


def run(args: argparse.Namespace) -> dict[str, object]:
    with archive_and_simulator(args) as (sim, env):
        run_archiver(["backfill", "-q", "--concurrency", str(args.concurrency)], env, sim)
        # A text no task holds: the search reads every row, as a miss must.
        matching = run_archiver(
            ["forget", "--matching", "nobody-at-all@example.invalid", "--reason", "bench"], env
        )
        matching_ascii_case = run_archiver(
            ["forget", "--matching", "Ünïcödé-Nobody", "--reason", "bench"], env
        )
        dry = run_archiver(
            ["prune", "--older-than", "1d", "--only", "events", "--reason", "b"], env
        )
        alone = run_archiver(["sync", "-q", "--no-discover"], env)
        prune_args = ["prune", "-q", "--older-than", "1d", "--only", "events", "--reason", "b"]
        # The sync starts a moment after the prune, and its own wall time is taken when
        # it exits (a thread waits for it), not when the prune does.
        beside_s: list[float] = []

        def sync_beside() -> None:
            time.sleep(1.0)
            started = time.perf_counter()
            subprocess.run([str(BIN), "sync", "-q", "--no-discover"], env=env, check=True)
            beside_s.append(time.perf_counter() - started)

        waiter = threading.Thread(target=sync_beside)
        waiter.start()
        pruned = run_archiver([*prune_args, "--yes"], env)
        waiter.join()
    batches = -(-args.tasks // 200)
    return {
        "benchmark": "prune",
        "tasks": args.tasks,
        "events_per_task": args.events,
        "database": database_label(args.database_url),
        "forget_matching_dry_run_s": r(matching.wall_s),
        "forget_matching_non_ascii_dry_run_s": r(matching_ascii_case.wall_s),
        "prune_dry_run_s": r(dry.wall_s),
        "prune_events_wall_s": r(pruned.wall_s),
        "prune_events_cpu_s": r(pruned.cpu_s),
        "prune_events_peak_rss_mb": r(pruned.peak_rss_mb, 1),
        "prune_batches": batches,
        "prune_s_per_batch": r(pruned.wall_s / batches),
        "sync_alone_wall_s": r(alone.wall_s),
        "sync_beside_prune_wall_s": r(beside_s[0]) if beside_s else None,
        "load": load(),
    }


if __name__ == "__main__":
    main()
