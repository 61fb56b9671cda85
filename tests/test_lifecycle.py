"""The bookkeeping around a run, through the real `archiver` command: a dead run reads
`crashed` at once and its lock and leases are freed for the next run of any command;
tasks skipped because a live run holds them are counted and make the pass `partial`; a
new archive is announced and a bare path is explained."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from archiver.store.database import Database
from archiver.store.locks import RunLock, gone_runs
from archiver.store.schema import locks, sync_runs, tasks
from archiver.timestamps import utcnow
from tests.conftest import (
    ARCHIVER_BIN,
    TEST_API_KEY,
    assert_matches_truth,
    run_archiver,
    start_archiver,
    wait_for_gets,
)
from tests.test_cli import env_for
from tests.test_web import start_serve, stop


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_a_killed_run_reads_crashed_at_once_and_its_leases_go_to_the_next_run(
    database_url: str, make_simulator, tmp_path: Path
) -> None:
    """After kill -9 mid-pass, `status --json`, /health and /metrics say `crashed` at once,
    and a backfill started right away reads every task the dead sync held, skipping none."""
    sim = make_simulator(tasks=24, events_per_task=4, seed=51, latency_ms=150.0)
    sim.finish_all()
    env = env_for(sim, database_url)
    proc = start_archiver("sync", "--concurrency", "2", "-q", env=env)
    wait_for_gets(sim, 4)  # polling: every due task is leased to it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = json.loads(run_archiver("status", "--json", env=env).stdout)
    last = status["last_runs"][0]
    assert (last["command"], last["outcome"]) == ("sync", "crashed"), last
    assert f"pid {proc.pid}" in last["message"] and "is gone" in last["message"]
    server, base = start_serve(database_url, env={})
    try:
        assert "o-crashed" in _fetch(base + "health")
        metrics = _fetch(base + "metrics")
        assert 'archiver_last_run_outcome{command="sync",outcome="crashed"} 1.0' in metrics
    finally:
        stop(server)
    db = Database(database_url)
    try:
        with db.reading() as conn:
            held = conn.scalar(select(func.count()).where(tasks.c.lease_owner.is_not(None)))
            unread = conn.scalar(select(func.count()).where(tasks.c.full_read_at.is_(None)))
        assert held and unread  # the dead run's leases, on tasks still to read
        done = run_archiver("backfill", "-q", env=env)
        assert done.returncode == 0, done.stderr
        assert re.search(rf"backfill ok: discovered \d+, polled {unread},", done.stderr), (
            done.stderr
        )
        with db.reading() as conn:
            outcomes = list(conn.scalars(select(sync_runs.c.outcome).order_by(sync_runs.c.id)))
            leases = conn.scalar(select(func.count()).where(tasks.c.lease_owner.is_not(None)))
        assert outcomes == ["crashed", "ok"] and leases == 0
        assert_matches_truth(db, sim)
    finally:
        db.dispose()


def test_a_run_on_another_host_is_crashed_once_its_heartbeat_is_stale(
    database: Database,
) -> None:
    """A run recorded on another host is judged by its heartbeat alone: alive while fresh,
    crashed once it is older than the lease (90 s); a live run here is alive."""
    live = RunLock(database, "sync")
    live.acquire()
    try:
        with database.transaction() as conn:
            now = utcnow()
            for run_id in ("far", live.owner):
                conn.execute(
                    sync_runs.insert().values(
                        run_id=run_id, command="backfill", host="h", pid=1, started_at=now,
                        outcome="running",
                    )
                )  # fmt: skip
            conn.execute(
                locks.insert().values(
                    name="backfill", owner="far", host="elsewhere", pid=os.getpid(),
                    acquired_at=now, heartbeat_at=now, boot_id="b", pid_namespace="p",
                )
            )  # fmt: skip
        with database.reading() as conn:
            assert gone_runs(conn, ["far", live.owner]) == {}
        with database.transaction() as conn:
            stale = utcnow() - timedelta(seconds=91)
            conn.execute(update(locks).where(locks.c.owner == "far").values(heartbeat_at=stale))
        with database.reading() as conn:
            gone = gone_runs(conn, ["far", live.owner])
        assert list(gone) == ["far"] and "heartbeat stopped" in gone["far"]
    finally:
        live.release()


def test_tasks_a_live_run_holds_are_counted_and_make_the_pass_partial(
    database_url: str, make_simulator, tmp_path: Path
) -> None:
    """A backfill beside a sync that holds some tasks: those are counted as skipped_leased
    (summary line, sync_runs, status, metrics) and the backfill is partial, exit 1; once
    the sync is done, the next backfill is ok and the archive exact."""
    sim = make_simulator(tasks=20, events_per_task=3, seed=52, latency_ms=250.0)
    sim.finish_all()
    env = env_for(sim, database_url)
    sync = start_archiver("sync", "--concurrency", "1", "-q", env=env)
    try:
        wait_for_gets(sim, 1)  # discovery is done and the sync holds every task
        metrics_file = tmp_path / "backfill.prom"
        done = run_archiver("backfill", "-q", "--metrics-file", str(metrics_file), env=env)
    finally:
        assert sync.wait(timeout=60) == 0
    assert done.returncode == 1, done.stderr
    found = re.search(r"backfill partial: .* skipped \(leased by another run\) (\d+),", done.stderr)
    assert found, done.stderr
    skipped = int(found.group(1))
    assert skipped > 0
    assert f"{skipped} task(s) skipped: another run is working on them" in done.stderr
    assert f'archiver_last_run_skipped_leased{{command="backfill"}} {skipped}.0' in (
        metrics_file.read_text()
    )
    status = json.loads(run_archiver("status", "--json", env=env).stdout)
    backfill = next(run for run in status["last_runs"] if run["command"] == "backfill")
    assert (backfill["outcome"], backfill["skipped_leased"]) == ("partial", skipped)
    assert "another run held their lease" in backfill["message"]
    again = run_archiver("backfill", "-q", env=env)
    assert again.returncode == 0, again.stderr
    db = Database(database_url)
    try:
        assert_matches_truth(db, sim)
    finally:
        db.dispose()


def test_a_new_archive_is_announced_once_even_with_quiet(
    database_url: str, make_simulator, tmp_path: Path
) -> None:
    """The command that creates an archive says where, once, even with -q: a relative
    `sqlite:///` path is shown absolute; later runs say nothing of it."""
    sim = make_simulator(tasks=3, events_per_task=2, seed=53)
    sim.finish_all()
    if database_url.startswith("sqlite"):
        database_url, where = "sqlite:///rel/archive.db", str(tmp_path / "rel" / "archive.db")
    else:
        where = Database(database_url).display_url()
    env = env_for(sim, database_url)
    first = subprocess.run(
        [ARCHIVER_BIN, "backfill", "-q"], env={**os.environ, **env}, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("creating a new archive") == 1, first.stderr
    assert f"creating a new archive at {where}\n" in first.stderr
    later = subprocess.run(
        [ARCHIVER_BIN, "sync", "-q"], env={**os.environ, **env}, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert later.returncode == 0, later.stderr
    assert "creating a new archive" not in later.stderr


def test_a_bare_path_as_database_url_names_the_url_to_use(tmp_path: Path) -> None:
    """`--database-url /path/a.db` (or a relative path) is one line that spells out the
    sqlite:/// URL to use, exit 2, and creates nothing."""
    paths = [(str(tmp_path / "a.db"), tmp_path / "a.db"), ("b.db", tmp_path / "b.db")]
    for given, absolute in paths:
        for command in (["status"], ["sync"]):
            done = subprocess.run(
                [ARCHIVER_BIN, *command, "--database-url", given],
                env={**os.environ, "CIRCLEMIND_API_KEY": TEST_API_KEY}, cwd=tmp_path,
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 2, done.stderr
            (line,) = done.stderr.strip().splitlines()
            assert f"use sqlite:///{absolute} " in line and repr(given) in line
    assert list(tmp_path.rglob("*.db")) == []
