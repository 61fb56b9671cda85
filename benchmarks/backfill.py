"""Backfill throughput against the simulator with added latency; prints JSON figures.

    python benchmarks/backfill.py --tasks 2000 --events 50 --latency-ms 50 --concurrency 32

The simulator runs in its own process (as the real API would) and `archiver backfill`
in another, so neither steals the other's interpreter. Efficiency compares the wall time
with the latency-bound ideal, requests x latency / concurrency.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).with_name("archiver")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()

    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archiver.simulator",
            "--port",
            "0",
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
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CIRCLEMIND_API_KEY": "bench-key"},  # the simulator's key
    )
    try:
        assert sim.stdout is not None
        base_url = sim.stdout.readline().strip()
        root = base_url.rsplit("/api/v1", 1)[0]
        with tempfile.TemporaryDirectory() as home:
            database_url = args.database_url or f"sqlite:///{home}/bench.db"
            env = {
                **os.environ,
                "CIRCLEMIND_API_KEY": "bench-key",
                "ARCHIVER_API_URL": base_url,
                "ARCHIVER_DATABASE_URL": database_url,
                "ARCHIVER_HOME": home,
            }
            subprocess.run([str(BIN), "db", "upgrade"], env=env, check=True, capture_output=True)
            started = time.perf_counter()
            proc = subprocess.Popen(
                [str(BIN), "backfill", "-q", "--concurrency", str(args.concurrency)],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
            stderr = proc.stderr.read() if proc.stderr else ""
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise SystemExit(f"backfill failed ({proc.returncode}): {stderr}")
        with urllib.request.urlopen(f"{root}/_sim/stats") as response:
            stats = json.load(response)
        sim_cpu = _cpu_seconds(sim.pid)
    finally:
        sim.terminate()
        sim.wait()
    requests = stats.get("list", 0) + stats.get("get", 0)
    events = args.tasks * args.events
    ideal = requests * args.latency_ms / 1000 / args.concurrency
    print(
        json.dumps(
            {
                "tasks": args.tasks,
                "events_per_task": args.events,
                "latency_ms": args.latency_ms,
                "concurrency": args.concurrency,
                "database": "sqlite"
                if args.database_url is None
                else args.database_url.split(":")[0],
                "wall_s": round(wall, 3),
                "requests": requests,
                "list_requests": stats.get("list", 0),
                "events_per_s": round(events / wall, 1),
                "archiver_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                "simulator_cpu_s": sim_cpu,
                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                "ideal_s": round(ideal, 3),
                "efficiency": round(ideal / wall, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
