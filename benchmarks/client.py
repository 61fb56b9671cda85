"""The API client alone: CPU of this process per Get Task (request, body, JSON, pydantic,
event keys), the simulator in its own process at L = 0; prints JSON figures.

    python benchmarks/client.py                          # 1,000 requests x 5 runs
    python benchmarks/client.py --requests 3000 --runs 10 --events 50

Each run sends ``--requests`` Get Task requests, ``--concurrency`` in flight, over one
SmoothClient (the archiver's production client and transport) and keys each task's
events as the engine does. ``cpu_ms_per_request`` is ``time.process_time()`` of this
process divided by the requests: the event-loop thread's share of a backfill, without
the database. The machine is shared with the simulator, so min and median of the runs
are printed beside every run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import urllib.request

from _bench import KEY, Simulator, load, workdir

from archiver.client import SmoothClient
from archiver.config import ApiKey, ClientConfig
from archiver.models import keyed_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="Get Task requests per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=50, help="events per task")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with workdir() as home:
        sim = Simulator(
            ["--finish-all", "--tasks", "128", "--events", str(args.events), "--seed", "1"],
            home,
        )
        try:
            ids = task_ids(sim.base_url)
            runs = [asyncio.run(one_run(args, sim.base_url, ids)) for _ in range(args.runs)]
        finally:
            sim.close()
    print(
        json.dumps(
            {
                "benchmark": "client",
                "requests": args.requests,
                "events_per_task": args.events,
                "concurrency": args.concurrency,
                "cpu_ms_per_request_min": round(min(runs), 3),
                "cpu_ms_per_request_median": round(statistics.median(runs), 3),
                "cpu_ms_per_request_all": [round(run, 3) for run in runs],
                "load": load(),
            }
        )
    )


def task_ids(base_url: str) -> list[str]:
    request = urllib.request.Request(f"{base_url}/task?l=128", headers={"apikey": KEY})
    with urllib.request.urlopen(request) as response:
        return [task["id"] for task in json.load(response)["r"]]


async def one_run(args: argparse.Namespace, base_url: str, ids: list[str]) -> float:
    """CPU milliseconds of this process per Get Task, over one run."""
    config = ClientConfig(api_url=base_url, api_key=ApiKey(KEY), task_requests=args.concurrency)
    async with SmoothClient(config) as client:
        await client.get_task(ids[0])  # connection set-up is not what is measured
        slots = asyncio.Semaphore(args.concurrency)

        async def get(n: int) -> None:
            async with slots:
                task = await client.get_task(ids[n % len(ids)])
                keyed_events(task.events)

        started = time.process_time()
        await asyncio.gather(*(get(n) for n in range(args.requests)))
        return (time.process_time() - started) * 1000 / args.requests


if __name__ == "__main__":
    main()
