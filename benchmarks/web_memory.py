"""Memory of `archiver serve` on a large task page, and of listing a huge zip; prints JSON
figures (not asserted anywhere; tests/test_web_hostile.py and tests/test_artifacts.py hold
the bounds).

    python benchmarks/web_memory.py
    python benchmarks/web_memory.py --loads 40 --events 200 --event-kb 100 --members 1000000

* ``task_page``: a task with ``--events`` events of ``--event-kb`` KB payloads; the real
  `archiver serve` in its own process; ``--loads`` concurrent loads of its page. Reported:
  the server's peak RSS (VmHWM) at start and after the loads, the wall time and the
  bytes of one page.
* ``zip_listing``: a zip64 archive of ``--members`` empty members (written directly, the
  way a hostile host could send one), listed by ``archiver.artifacts.list_zip`` in a fresh
  process. Reported: the peak RSS it added, seconds, and members listed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from archiver.simulator.content import many_members_zip
from archiver.store.database import Database
from archiver.store.schema import task_events, tasks

CREATED = 1_764_900_000


def peak_mb(pid: int | str = "self") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def seed_task(url: str, events: int, event_kb: int) -> None:
    db = Database(url)
    db.prepare()
    now = datetime.now(UTC)
    filler = "x" * (event_kb * 1000)
    with db.transaction() as conn:
        conn.execute(
            insert(tasks).values(
                id="tsk_big", status="done", device="desktop", credits_used=1,
                created_at=CREATED, first_seen_at=now, finalized_at=now,
            )
        )  # fmt: skip
        conn.execute(
            insert(task_events),
            [
                {
                    "task_id": "tsk_big", "event_key": f"k{i}", "name": "browser_action",
                    "payload": {"n": i, "html": f"<td>{filler}</td>"},
                    "timestamp": (CREATED + i) * 1000, "archived_at": now,
                }
                for i in range(events)
            ],
        )  # fmt: skip
    db.dispose()


def task_page(python: str, url: str, loads: int) -> dict[str, Any]:
    proc = subprocess.Popen(
        [str(Path(python).with_name("archiver")), "serve", "--database-url", url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        match = re.search(r" at (http://\S+/)$", proc.stdout.readline().strip())
        assert match, "archiver serve printed no address"
        page = match.group(1) + "task?id=tsk_big"
        start = peak_mb(proc.pid)

        def load(_: int) -> int:
            with httpx.Client(timeout=600) as client:
                response = client.get(page)
            return len(response.content)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(loads) as pool:
            sizes = list(pool.map(load, range(loads)))
        return {
            "loads": loads,
            "peak_rss_mb_at_start": round(start),
            "peak_rss_mb": round(peak_mb(proc.pid)),
            "seconds": round(time.perf_counter() - t0, 1),
            "page_mb": round(max(sizes) / 1e6, 1),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


LIST_ZIP = """
import json, re, sys, time
from archiver.artifacts import list_zip
from archiver.blobs import BlobStore
def peak():
    text = open('/proc/self/status').read()
    return int(re.search(r'VmHWM:\\s+(\\d+) kB', text).group(1)) / 1024
store = BlobStore(sys.argv[1], create=False)
before, t0 = peak(), time.perf_counter()
members, error = list_zip(store, 'tasks/undated/tsk_zip/downloads.zip')
print(json.dumps({"added_peak_rss_mb": round(peak() - before), "listed": len(members),
                  "seconds": round(time.perf_counter() - t0, 2)}))
"""


def zip_listing(python: str, folder: Path, members: int) -> dict[str, Any]:
    target = folder / "blobs" / "tasks" / "undated" / "tsk_zip" / "downloads.zip"
    target.parent.mkdir(parents=True)
    target.write_bytes(many_members_zip(members))
    done = subprocess.run(
        [python, "-c", LIST_ZIP, str(folder / "blobs")],
        capture_output=True,
        text=True,
        cwd=folder,  # the installed archiver, not a checkout in the working directory
        check=True,
    )
    return {
        "members": members,
        "zip_mb": round(target.stat().st_size / 1e6),
        **json.loads(done.stdout),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=40)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--event-kb", type=int, default=100)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter whose archiver serves and lists (e.g. another checkout's "
        "venv, for a before/after); the data is made by this one",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archiver-web-memory-") as name:
        folder = Path(name)
        url = f"sqlite:///{folder / 'archive.db'}"
        seed_task(url, args.events, args.event_kb)
        results = {
            "task_page": {
                "events": args.events,
                "event_kb": args.event_kb,
                **task_page(args.python, url, args.loads),
            },
            "zip_listing": zip_listing(args.python, folder, args.members),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
