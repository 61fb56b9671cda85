"""Shared plumbing of the benchmark scripts: a simulator in its own process, the real
`archiver` command as a child process measured with ``wait4``, and the machine's load.

Not a test helper: benchmarks print JSON figures and never assert timings.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).with_name("archiver")
KEY = "bench-key"


def compile_archiver() -> None:
    """Write the bytecode of the archiver package, as `pip install .` does at install time.

    From an editable install (a checkout) with PYTHONDONTWRITEBYTECODE set, as in some
    sandboxes, every process would compile the package from source again: ~0.2 s of
    start-up on a 2-core machine that no installed archiver pays.
    """
    spec = importlib.util.find_spec("archiver")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            compileall.compile_dir(location, quiet=1)


compile_archiver()

# Runs `python -m archiver.simulator ARGS` with one hook: the wall-clock time (time.time())
# of the first API request after the stamp file was removed is written to that file, so a
# benchmark can measure an archiver's start-up from the simulator's side (process start to
# first request) without touching simulator.py.
_SIM_WRAPPER = """
import os, sys, time
import archiver.simulator as s
try:  # the simulator package (main after the simulator split) or the old module
    from archiver.simulator.httpd import Handler
except ImportError:
    Handler = s._Handler
stamp = os.environ["BENCH_FIRST_REQUEST_FILE"]
orig = Handler.do_GET
def do_get(self):
    if self.path.startswith("/api/") and not os.path.exists(stamp):
        with open(stamp + ".tmp", "w") as f:
            f.write(repr(time.time()))
        os.replace(stamp + ".tmp", stamp)
    return orig(self)
Handler.do_GET = do_get
timeline = os.environ.get("BENCH_TIMELINE_FILE")
if timeline:
    # One line per API request: arrival and departure (wall clock), and its route.
    import threading
    lock = threading.Lock()
    out = open(timeline, "a", buffering=1)
    traced = Handler.do_GET
    def do_get_traced(self):
        if not self.path.startswith("/api/"):
            return traced(self)
        t0 = time.time()
        try:
            return traced(self)
        finally:
            t1 = time.time()
            kind = "list" if self.path.split("?")[0].endswith("/task") else "get"
            with lock:
                out.write(f"{t0!r} {t1!r} {kind}\\n")
    Handler.do_GET = do_get_traced
sys.exit(s.main(sys.argv[1:]))
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    """The 1/5/15-minute load averages, to print beside every figure (a shared machine)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Simulator:
    """``python -m archiver.simulator`` in its own process, with the first-request hook."""

    def __init__(self, args: Sequence[str], workdir: Path) -> None:
        self.stamp = workdir / "first-request"
        #: One line per API request (see _SIM_WRAPPER), read by :func:`request_timeline`.
        self.timeline = workdir / "timeline"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SIM_WRAPPER, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            # The simulator takes its key from the environment (older ones need none).
            env={
                **os.environ,
                "BENCH_FIRST_REQUEST_FILE": str(self.stamp),
                "BENCH_TIMELINE_FILE": str(self.timeline),
                "CIRCLEMIND_API_KEY": KEY,
            },
        )
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url:
            raise SystemExit("the simulator did not start")
        self.root = self.base_url.rsplit("/api/v1", 1)[0]

    def control(self, name: str, method: str = "GET") -> Any:
        request = urllib.request.Request(f"{self.root}/_sim/{name}", method=method)
        with urllib.request.urlopen(request) as response:
            return json.load(response)

    def stats(self) -> dict[str, int]:
        return dict(self.control("stats"))

    def reset(self) -> None:
        """Zero the request counters and re-arm the first-request stamp."""
        self.control("reset_stats", "POST")
        self.stamp.unlink(missing_ok=True)
        self.timeline.write_text("")

    def first_request_at(self) -> float | None:
        try:
            return float(self.stamp.read_text())
        except FileNotFoundError:
            return None

    def cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@dataclass
class Run:
    """One archiver child process, measured."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    startup_s: float | None
    stdout: str
    #: Wall clock (time.time()) of the child's start and of its exit.
    started_at: float = 0.0
    ended_at: float = 0.0


def env_for(sim: Simulator, home: Path, database_url: str | None) -> dict[str, str]:
    return {
        **os.environ,
        "CIRCLEMIND_API_KEY": KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url or f"sqlite:///{home}/bench.db",
        "ARCHIVER_HOME": str(home),
    }


def run_archiver(args: Sequence[str], env: dict[str, str], sim: Simulator | None = None) -> Run:
    """Run ``archiver ARGS`` to completion: wall time, CPU and peak RSS of that child
    (``wait4``), and its start-up (process start to the simulator's first request)."""
    if sim is not None:
        sim.stamp.unlink(missing_ok=True)
    started_wall = time.time()
    started = time.perf_counter()
    # Output goes to files, not pipes: a chatty child never blocks on a full pipe.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(BIN), *args], env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        ended_wall = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"archiver {' '.join(args)} failed ({proc.returncode}): {stderr}")
    first = sim.first_request_at() if sim is not None else None
    return Run(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        startup_s=None if first is None else first - started_wall,
        stdout=stdout,
        started_at=started_wall,
        ended_at=ended_wall,
    )


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="archiver-bench-") as home:
        yield Path(home)


def bench_args(doc: str, *, tasks: int, events: int, sizes: str) -> argparse.ArgumentParser:
    """The options every backfill-style benchmark takes (``sizes``: the full sizes, for
    --help); a script adds its own before calling :func:`print_runs`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=tasks, help=f"N (full: {sizes})")
    parser.add_argument("--events", type=int, default=events, help="events per task")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each printed")
    return parser


def print_runs(args: argparse.Namespace, run: Callable[[argparse.Namespace], object]) -> None:
    """``--repeat`` runs, each printed as one JSON line as soon as it ends."""
    for _ in range(args.repeat):
        print(json.dumps(run(args)), flush=True)


@contextmanager
def archive_and_simulator(
    args: argparse.Namespace, *sim_args: str
) -> Iterator[tuple[Simulator, dict[str, str]]]:
    """A simulator in its own process (all tasks finished) and an empty, migrated archive
    (SQLite, or a fresh --database-url), with the simulator's counters reset."""
    with workdir() as home:
        sim = Simulator(
            ["--finish-all", "--tasks", str(args.tasks), "--events", str(args.events),
             "--seed", str(args.seed), *sim_args],
            home,
        )  # fmt: skip
        try:
            if args.database_url:
                fresh_postgres(args.database_url)
            env = env_for(sim, home, args.database_url)
            run_archiver(["db", "upgrade"], env)
            sim.reset()
            yield sim, env
        finally:
            sim.close()


def fresh_postgres(url: str) -> str:
    """A fresh, empty database next to the one ``url`` names (dropped and re-created), so
    repeated runs start from nothing like the SQLite file does."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    name = target.database or "bench"
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url


def database_label(url: str | None) -> str:
    return "sqlite" if url is None else url.split(":")[0].split("+")[0]


def r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def request_timeline(sim: Simulator, proc: Run, concurrency: int) -> dict[str, object]:
    """Where a run's workers waited, from the simulator's side: every API request's
    arrival and departure (wall clock) against the archiver process's start and exit.

    Worker-seconds outside a Get Task are ``concurrency`` x phase length minus the time
    Get Tasks were in flight, split into the phases of a run: start-up (process start to
    the first request), the ramp (until ``concurrency`` Get Tasks are first in flight),
    the steady middle, the drain (from the last time all were in flight to the last
    answer) and the exit (last answer to process exit).
    """
    rows = [line.split() for line in sim.timeline.read_text().splitlines() if line]
    gets = sorted((float(a), float(b)) for a, b, kind in rows if kind == "get")
    lists = sorted(float(a) for a, _, kind in rows if kind == "list")
    if not gets:
        return {}
    start, end = proc.started_at, proc.ended_at
    first = min(gets[0][0], lists[0] if lists else gets[0][0])
    last = max(b for _, b in gets)
    # In-flight Get Tasks over time: +1 at arrival, -1 at departure.
    edges = sorted([(a, 1) for a, _ in gets] + [(b, -1) for _, b in gets])
    inflight, full_first, full_last, prev, area = 0, None, None, first, 0.0
    per_second: dict[int, int] = {}
    for t, step in edges:
        area += inflight * (t - prev)
        prev = t
        inflight += step
        if inflight >= concurrency:
            full_first = t if full_first is None else full_first
            full_last = t
        if step < 0:
            per_second[int(t - first)] = per_second.get(int(t - first), 0) + 1
    full_first = full_first if full_first is not None else first
    full_last = full_last if full_last is not None else last

    def busy(lo: float, hi: float) -> float:
        return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in gets)

    def idle(lo: float, hi: float) -> float:
        return r(max(0.0, concurrency * (hi - lo) - busy(lo, hi)))  # type: ignore[return-value]

    middle = sorted(per_second.items())[1:-1]
    return {
        "startup_s": r(first - start),
        "ramp_s": r(full_first - first),
        "middle_s": r(full_last - full_first),
        "drain_s": r(last - full_last),
        "exit_s": r(end - last),
        "mean_in_flight_middle": r(
            busy(full_first, full_last) / max(1e-9, full_last - full_first), 2
        ),
        "mean_in_flight_requests": r(area / max(1e-9, last - first), 2),
        "idle_worker_s": {
            "startup": r(concurrency * (first - start)),
            "ramp": idle(first, full_first),
            "middle": idle(full_first, full_last),
            "drain": idle(full_last, last),
            "exit": r(concurrency * (end - last)),
        },
        "gets_per_s_min_max_middle": [
            min((n for _, n in middle), default=0),
            max((n for _, n in middle), default=0),
        ],
        "list_at_s": [r(t - start, 2) for t in lists],
    }
