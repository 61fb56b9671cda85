"""Crash safety: real `archiver` processes killed with SIGKILL at random (seeded) moments.

Whatever instant the kill lands on (migrating, listing, mid-transaction, between tasks),
running the command again must end in exactly the state an uninterrupted run reaches.
ARCHIVER_CRASH_TRIALS sets the number of trials per database (default 6).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess

import pytest

from archiver.db import Database
from tests.conftest import ARCHIVER_BIN, TEST_API_KEY, assert_matches_truth, run_archiver

TRIALS = int(os.environ.get("ARCHIVER_CRASH_TRIALS", "6"))


def _kill_after(command: list[str], env: dict[str, str], delay: float) -> int | None:
    """Start the command, SIGKILL it after ``delay`` seconds; its exit code if it beat us."""
    proc = subprocess.Popen(
        [ARCHIVER_BIN, *command],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_at_a_random_moment_then_rerun_reaches_ground_truth(
    database_url: str, make_simulator, trial: int
) -> None:
    """kill -9 of sync/backfill at random points, then clean runs: same rows, no duplicates."""
    rng = random.Random(1000 + trial)
    command = "backfill" if trial % 2 else "sync"
    sim = make_simulator(
        tasks=30,
        events_per_task=20,
        seed=trial,
        latency_ms=8.0,
        event_tie_rate=0.3,
        null_event_id_rate=0.2,
        created_at_group=4,
        spacing_s=20.0,
        duration_s=(60.0, 400.0),
    )
    env = {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
    }
    args = [command, "-q", "--concurrency", str(rng.choice([1, 4, 8]))]
    kills = 0
    for _ in range(3):  # up to three kills per trial, clock moving in between
        code = _kill_after(args, env, rng.uniform(0.05, 1.2))
        kills += code is None
        assert code in (None, 0), f"run exited {code} before the kill"
        sim.advance(rng.uniform(20.0, 120.0))
    sim.finish_all()
    for _ in range(2):  # the second run proves the first one left nothing to redo
        done = run_archiver(command, "-q", env=env, timeout=120)
        assert done.returncode == 0, done.stderr
    if command == "backfill":
        done = run_archiver("sync", "-q", env=env, timeout=120)
        assert done.returncode == 0, done.stderr
    db = Database(database_url)
    try:
        assert_matches_truth(db, sim)
    finally:
        db.dispose()
