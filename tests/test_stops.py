"""Stopping the real `archiver` command: every way an operator stops a run (GNU timeout
with SIGINT or SIGTERM, SIGTERM to the process group as systemd does, Ctrl-C in a
terminal), at random moments of a `sync` and of a `backfill`, and stops during start-up
and of `serve`. Each stop exits 130 or 143 without a traceback or click's `Aborted!`,
records its run `interrupted`, and leaves no lock and no lease behind.

ARCHIVER_STOP_TRIALS sets the rounds per database, each stopping one run every way
(default 1: four stops, two of a sync and two of a backfill, small for CI); the commands
alternate, so 40 rounds give 20 moments of a sync and 20 of a backfill for each way (the
soak in the README).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import signal
import subprocess
import termios
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select, update

from archiver.simulator import Simulator
from archiver.store.database import Database
from archiver.store.schema import locks, sync_runs, tasks
from tests.conftest import ARCHIVER_BIN, assert_matches_truth, run_archiver
from tests.test_cli import env_for

TRIALS = int(os.environ.get("ARCHIVER_STOP_TRIALS", "1"))
#: Ways of stopping: (name, signal the archiver receives).
WAYS = {
    "timeout -s INT": signal.SIGINT,
    "timeout": signal.SIGTERM,
    "SIGTERM to the process group": signal.SIGTERM,
    "Ctrl-C in a terminal": signal.SIGINT,
}
#: Stop moments, seconds after the run's first API request (its pass has begun: listing,
#: polling, saving); the moment of ``timeout`` counts from the command's start, so the
#: start-up the trial before took is added.
MOMENTS = (0.0, 1.0)
#: What a stop in the first moments may say: that a new archive is made, and if the pass
#: had begun, that it stops, and its summary.
QUIET_STOP = r"creating a new archive at |stopping after the writes in flight|sync interrupted: "


@dataclass
class Stopped:
    """What one stopped run did."""

    returncode: int
    output: str
    #: Its sync_runs rows (none when the stop came before the pass began).
    outcomes: list[str]
    leftover_locks: int
    leftover_leases: int


def _pty_spawn(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start the command in a new session whose controlling terminal is a new pty."""
    master, slave = os.openpty()

    def take_terminal() -> None:  # in the child, after setsid
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        args,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=take_terminal,  # the test process starts no threads of its own here
    )
    os.close(slave)
    return proc, master


def _drain(fd: int, into: list[bytes]) -> threading.Thread:
    """Read a pty until the other side closes (so the child never blocks on it)."""

    def read() -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            into.append(chunk)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


class FirstRequest:
    """When the run started and when the simulator saw its first API request."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.base = sim.api_requests
        self.started = time.monotonic()

    def wait(self, proc: subprocess.Popen[Any], timeout: float = 60.0) -> float | None:
        """Block until the run's first request (seconds since the run started), or until
        it ends without one (None)."""
        deadline = self.started + timeout
        while not self.sim.wait_for_requests(self.base + 1, 0.05):
            if proc.poll() is not None:
                return None
            assert time.monotonic() < deadline, "the run made no request"
        return time.monotonic() - self.started


def stop_once(
    way: str, args: list[str], env: dict[str, str], sim: Simulator, moment: float, startup: float
) -> tuple[int, str, float]:
    """Run `archiver ARGS` and stop it the ``way`` an operator would, ``moment`` seconds
    after its first API request (``timeout``: ``startup + moment`` after its start); its
    exit status (``timeout`` reports 128 + N for a child killed by signal N), its output,
    and the start-up it took."""
    full_env = {**os.environ, **env}
    first = FirstRequest(sim)
    if way.startswith("timeout"):
        sig = ["-s", "INT"] if way == "timeout -s INT" else []
        duration = f"{startup + moment:.3f}"
        proc_t = subprocess.Popen(
            ["timeout", "--preserve-status", *sig, duration, ARCHIVER_BIN, *args],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        took = first.wait(proc_t)
        _, err = proc_t.communicate(timeout=120)
        return proc_t.returncode, err, startup if took is None else took
    if way == "SIGTERM to the process group":
        proc = subprocess.Popen(
            [ARCHIVER_BIN, *args],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        took = first.wait(proc) or startup
        time.sleep(moment)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err, took
    proc_b, master = _pty_spawn([ARCHIVER_BIN, *args], full_env)
    chunks: list[bytes] = []
    reader = _drain(master, chunks)
    took = first.wait(proc_b) or startup
    time.sleep(moment)
    os.write(master, b"\x03")  # Ctrl-C: the terminal sends SIGINT to its foreground group
    proc_b.wait(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    return proc_b.returncode, b"".join(chunks).decode(errors="replace"), took


def _state(db: Database, after_id: int) -> tuple[list[str], int, int]:
    with db.reading() as conn:
        outcomes = list(
            conn.scalars(
                select(sync_runs.c.outcome)
                .where(sync_runs.c.id > after_id)
                .order_by(sync_runs.c.id)
            )
        )
        held = conn.scalar(select(func.count()).select_from(locks)) or 0
        leases = conn.scalar(select(func.count()).where(tasks.c.lease_owner.is_not(None))) or 0
    return outcomes, held, leases


def _last_run_id(db: Database) -> int:
    with db.reading() as conn:
        return conn.scalar(select(func.max(sync_runs.c.id))) or 0


def test_every_stop_is_recorded_and_frees_lock_and_leases(
    database_url: str, make_simulator
) -> None:
    """Each way of stopping, at random moments of a sync and of a backfill, exits 130/143
    quietly; the run row is `interrupted`, no lock or lease is left, and the next run (the
    next trial's) finds nothing crashed."""
    rng = random.Random(database_url.split(":", 1)[0])
    sim = make_simulator(tasks=120, events_per_task=5, seed=7, latency_ms=300.0)
    env = env_for(sim, database_url)
    db = Database(database_url)
    db.prepare()
    try:
        landed: dict[str, Counter[str]] = {way: Counter() for way in WAYS}
        startup = 1.5  # seconds to a run's first request, until a trial measures it
        for trial in range(TRIALS * len(WAYS)):
            way = list(WAYS)[trial % len(WAYS)]
            command = ("sync", "backfill")[(trial + trial // len(WAYS)) % 2]
            for _ in range(4):  # a `timeout` that fell in start-up is tried again, later
                where, startup = _stop_trial(db, way, command, env, sim, rng, startup)
                landed[way][where] += 1
                if where != "start-up":
                    break
                startup += 1.0
        print(
            f"stop trials on {db.dialect}: "
            + "; ".join(f"{w}: {dict(c)}" for w, c in landed.items())
        )
        assert all(c["sync mid-pass"] + c["backfill mid-pass"] >= 1 for c in landed.values())
        with db.reading() as conn:
            crashed = conn.scalar(select(func.count()).where(sync_runs.c.outcome == "crashed"))
        assert crashed == 0
        # Nor does the last run leave anything that would be judged crashed.
        status = json.loads(run_archiver("status", "--json", env=env).stdout)
        assert "crashed" not in {run["outcome"] for run in status["last_runs"]}
    finally:
        db.dispose()


def _stop_trial(
    db: Database,
    way: str,
    command: str,
    env: dict[str, str],
    sim: Simulator,
    rng: random.Random,
    startup: float,
) -> tuple[str, float]:
    """One stopped run, checked; where it landed, and the start-up it took."""
    args = [command, "--concurrency", "2" if command == "sync" else "1"]
    if command == "backfill":  # history to read again, however many trials came before
        with db.transaction() as conn:
            conn.execute(update(tasks).values(full_read_at=None))
    before = _last_run_id(db)
    moment = rng.uniform(*MOMENTS)
    code, output, startup = stop_once(way, args, env, sim, moment, startup)
    outcomes, held, leases = _state(db, before)
    context = f"{way} {command} at +{moment:.2f}s: exit {code}, runs {outcomes}\n{output}"
    if code == 0:
        return "finished first", startup  # nothing was stopped
    assert code == 128 + WAYS[way], context
    assert "Traceback" not in output and "Aborted!" not in output, context
    assert outcomes in ([], ["interrupted"]), context
    assert (held, leases) == (0, 0), context
    if not outcomes:
        return "start-up", startup
    assert re.search(rf"{command} interrupted: discovered \d+", output), context
    return f"{command} mid-pass", startup


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_start_up_exits_quietly_and_leaves_a_usable_archive(
    database_url: str, make_simulator, signum: int
) -> None:
    """SIGINT/SIGTERM in the first moments of a sync on a new archive (start-up, the
    migrations) exits 130/143 without `Aborted!` or a traceback; the archive stays usable."""
    rng = random.Random(signum)
    sim = make_simulator(tasks=6, events_per_task=3, seed=8, latency_ms=200.0)
    sim.finish_all()
    env = env_for(sim, database_url)
    for _ in range(2):
        proc = subprocess.Popen(
            [ARCHIVER_BIN, "sync", "-q"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.3, 0.7))  # the CLI loading, the migrations, the pass
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 0 or "sync ok:" in err:
            continue  # it had finished (the signal came as the interpreter exited)
        # It exits with 130/143 (killed by the signal it would be -2/-15: systemd and
        # shells tell the two apart).
        assert proc.returncode == 128 + signum, err
        assert "Aborted!" not in err and "Traceback" not in err, err
        # At most the notice of a new archive, and the stop of a pass that had begun.
        said = [line for line in err.splitlines() if not re.search(QUIET_STOP, line)]
        assert said == [], err
    done = run_archiver("sync", "-q", env=env)
    assert done.returncode == 0, done.stderr
    db = Database(database_url)
    try:
        assert_matches_truth(db, sim)
    finally:
        db.dispose()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_stopped_by_a_signal_exits_130_or_143_quietly(
    database: Database, signum: int
) -> None:
    """`archiver serve` stops on Ctrl-C (130) or SIGTERM (143) without `Aborted!`."""
    proc = subprocess.Popen(
        [ARCHIVER_BIN, "serve", "--database-url", database.url, "--port", "0"],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert " at http://" in proc.stdout.readline()  # listening
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    assert err == "", err
