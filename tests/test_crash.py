"""Crash safety: real `archiver` processes killed with SIGKILL in the middle of their work.

Each kill is triggered by the simulator's request counter, not a wall-clock delay (start-up
alone takes most of a second): after k API requests of the run (k random, seeded, and
below the requests the pass has left to make), the process gets SIGKILL, so it lands
while the run is discovering, polling or writing. Every trial checks that each kill landed
mid-work, then clean runs must reach exactly the state an uninterrupted run reaches.
Production defaults throughout (retries, back-off): nothing is switched off.

ARCHIVER_CRASH_TRIALS sets the number of trials per database (default 2, of
KILLS_PER_TRIAL = 10 kills each: 20 kills per database; small for CI).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from archiver.simulator import Simulator
from archiver.store.database import Database
from archiver.store.schema import sync_runs, tasks
from tests.conftest import ARCHIVER_BIN, TEST_API_KEY, assert_matches_truth, run_archiver

TRIALS = int(os.environ.get("ARCHIVER_CRASH_TRIALS", "2"))
#: Kills per trial: each costs a process start-up, the clean reruns are paid per trial.
KILLS_PER_TRIAL = 10
#: k is drawn from 1 .. this share of the requests the pass has left (at least): sync polls
#: every active task on each pass, a backfill shrinks its work with every kill.
K_SHARE = {"sync": 1 / 3, "backfill": 1 / 6}
#: A kill waits at most this long for its k-th request (a hung run fails the trial).
REQUEST_WAIT_S = 60.0


def settle(sim: Simulator) -> int:
    """The simulator's API request count once it stops moving (a killed run's requests
    already on the wire still arrive): the baseline the next run's k-th request is
    counted from."""
    count = sim.api_requests
    while True:
        time.sleep(0.05)
        if sim.api_requests == count:
            return count
        count = sim.api_requests


def requests_left_at_least(db: Database, sim: Simulator, command: str) -> int:
    """A lower bound on the API requests the next pass makes: one Get Task for every task
    that exists and that the pass still has to read (no errors happen in this suite)."""
    done = tasks.c.finalized_at.is_not(None)
    if command == "backfill":
        done = done | tasks.c.full_read_at.is_not(None)
    with db.reading() as conn:
        finished = conn.scalar(select(func.count()).where(done)) or 0
    return len(sim.truth()) - finished


@dataclass
class Kill:
    """What one attempt to kill a run after ``k`` requests found."""

    k: int
    killed: bool  # SIGKILL hit the running process (it had not exited on its own)
    requests: int  # API requests the run had made when the signal was sent
    run_open: bool  # its sync_runs row still said "running": the pass had not finished

    @property
    def mid_work(self) -> bool:
        return self.killed and self.requests >= 1 and self.run_open


def kill_after_requests(
    args: list[str], env: dict[str, str], sim: Simulator, db: Database, k: int
) -> Kill:
    """Start the real `archiver`, SIGKILL it once the simulator has answered ``k`` of its
    requests (counted as they arrive, polled every 2 ms), and report where it landed."""
    base = settle(sim)
    proc = subprocess.Popen(
        [ARCHIVER_BIN, *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + REQUEST_WAIT_S
    try:
        while proc.poll() is None and sim.api_requests - base < k:
            if time.monotonic() > deadline:
                raise AssertionError(f"`archiver {args[0]}` made no {k}th request in time")
            time.sleep(0.002)
        made = sim.api_requests - base
        proc.send_signal(signal.SIGKILL)  # a no-op on a process that already exited
    finally:
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
    assert code in (0, -signal.SIGKILL), f"`archiver {args[0]}` exited {code} before the kill"
    with db.reading() as conn:
        outcome = conn.scalar(
            select(sync_runs.c.outcome)
            .where(sync_runs.c.pid == proc.pid)
            .order_by(sync_runs.c.id.desc())
            .limit(1)
        )
    return Kill(k=k, killed=code == -signal.SIGKILL, requests=made, run_open=outcome == "running")


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_mid_work_then_rerun_reaches_ground_truth(
    database_url: str, make_simulator, trial: int
) -> None:
    """kill -9 of sync/backfill after k API requests, KILLS_PER_TRIAL times; each kill lands
    mid-work; then clean runs store exactly the API's tasks and events, none twice."""
    rng = random.Random(1000 + trial)
    command = "backfill" if trial % 2 else "sync"
    sim = make_simulator(
        tasks=100,
        events_per_task=20,
        seed=trial,
        latency_ms=8.0,
        event_tie_rate=0.3,
        null_event_id_rate=0.2,
        created_at_group=4,
        spacing_s=20.0,
        duration_s=(60.0, 2400.0),
    )
    env = {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
    }
    db = Database(database_url)
    db.prepare()  # so the requests-left bound can be read before the first run
    try:
        kills: list[Kill] = []
        for _ in range(KILLS_PER_TRIAL):  # the clock moves in between: tasks end, finalize
            left = requests_left_at_least(db, sim, command)
            # Well below what is left: the kill lands before the pass is done.
            k = rng.randint(1, max(1, int(left * K_SHARE[command])))
            args = [command, "-q", "--concurrency", str(rng.choice([1, 4, 8]))]
            kills.append(kill_after_requests(args, env, sim, db, k))
            sim.advance(rng.uniform(20.0, 120.0))
        print(
            f"crash trial {trial} ({command}): {sum(kill.killed for kill in kills)} kills, "
            f"{sum(kill.mid_work for kill in kills)} mid-work, at requests "
            f"{[kill.requests for kill in kills]}"
        )
        assert [kill for kill in kills if not kill.mid_work] == []
        sim.finish_all()
        for _ in range(2):  # the second run proves the first one left nothing to redo
            done = run_archiver(command, "-q", env=env, timeout=120)
            assert done.returncode == 0, done.stderr
        if command == "backfill":
            done = run_archiver("sync", "-q", env=env, timeout=120)
            assert done.returncode == 0, done.stderr
        assert_matches_truth(db, sim)
        with db.reading() as conn:
            crashed = conn.scalar(select(func.count()).where(sync_runs.c.outcome == "crashed"))
        assert crashed == len(kills), "each killed run is recorded as crashed by its heir"
    finally:
        db.dispose()
