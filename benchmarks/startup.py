"""Start-up of `archiver sync`: process start to its first API request (the simulator's
clock), plus ``python -X importtime`` of the same command, summed per top-level package;
prints JSON.

    python benchmarks/startup.py                        # 5 runs, SQLite
    python benchmarks/startup.py --runs 10 --database-url postgresql://postgres@127.0.0.1/bench

The archive is created and migrated first (a steady cron `sync` finds it at head). Each
run is a real `archiver sync -q` against a one-task simulator in its own process; the
import profile comes from one more run with ``PYTHONPROFILEIMPORTTIME=1``. On a shared
machine the minimum is the figure least disturbed by other work; the median is shown too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from collections import Counter

from _bench import (
    BIN,
    Simulator,
    database_label,
    env_for,
    fresh_postgres,
    load,
    r,
    run_archiver,
    workdir,
)


def import_profile(env: dict[str, str]) -> dict[str, float]:
    """Milliseconds of import time per top-level package (the sum of its modules' own
    times, so a package is charged only for itself), the 15 largest."""
    proc = subprocess.run(
        [str(BIN), "sync", "-q"],
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    totals: Counter[str] = Counter()
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        totals[name.strip().split(".")[0]] += int(own)
    totals["(total)"] = sum(totals.values())
    return {k: round(v / 1000, 1) for k, v in totals.most_common(16)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()
    with workdir() as home:
        sim = Simulator(["--finish-all", "--tasks", "1", "--events", "1"], home)
        try:
            if args.database_url:
                fresh_postgres(args.database_url)
            env = env_for(sim, home, args.database_url)
            run_archiver(["sync", "-q"], env)
            runs = [run_archiver(["sync", "-q"], env, sim) for _ in range(args.runs)]
            imports = import_profile(env)
        finally:
            sim.close()
    startups = [run.startup_s for run in runs if run.startup_s is not None]
    print(
        json.dumps(
            {
                "benchmark": "startup",
                "database": database_label(args.database_url),
                "runs": len(runs),
                "startup_s_min": r(min(startups)),
                "startup_s_median": r(statistics.median(startups)),
                "startup_s_all": [r(s) for s in startups],
                "wall_s_min": r(min(run.wall_s for run in runs)),
                "cpu_s_min": r(min(run.cpu_s for run in runs)),
                "import_ms_by_package": imports,
                "python": os.path.basename(os.path.realpath(BIN.with_name("python"))),
                "load": load(),
            }
        )
    )


if __name__ == "__main__":
    main()
