"""Operator mistakes and a dead API (issue 8, items 2 and 3), with the real `archiver`
command: a wrong URL never buries live tasks, a dead or misconfigured API never looks
healthy, and tasks wrongly recorded as gone come back."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from sqlalchemy import select, update

from archiver.store.database import Database
from archiver.store.schema import tasks
from archiver.timestamps import utcnow
from tests.conftest import TEST_API_KEY, run_archiver


def env_for(api_url: str, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": api_url,
        "ARCHIVER_DATABASE_URL": database_url,
        **extra,
    }


def task_rows(database_url: str) -> dict[str, dict]:
    db = Database(database_url)
    try:
        with db.reading() as conn:
            return {row.id: row._asdict() for row in conn.execute(select(tasks))}
    finally:
        db.dispose()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def active_archive(database_url: str, make_simulator):  # type: ignore[no-untyped-def]
    """A simulator with running tasks and an archive that tracks them."""
    sim = make_simulator(tasks=6, events_per_task=5, seed=81, duration_s=(3000.0, 4000.0))
    done = run_archiver("sync", "-q", env=env_for(sim.base_url, database_url))
    assert done.returncode == 0, done.stderr
    rows = task_rows(database_url)
    assert len(rows) == 6 and all(r["finalized_at"] is None for r in rows.values())
    return sim


def test_a_wrong_api_url_exits_2_and_buries_no_task(database_url: str, make_simulator) -> None:
    """Against /api/v2 every pass exits 2 naming the URL; no task is gone; the fixed URL
    archives everything."""
    sim = active_archive(database_url, make_simulator)
    wrong = sim.base_url.replace("/api/v1", "/api/v2")
    for args in (["sync"], ["sync", "--no-discover"], ["sync"], ["sync", "--no-discover"]):
        done = run_archiver(*args, "-q", env=env_for(wrong, database_url))
        assert done.returncode == 2, done.stderr
        assert wrong in done.stderr and "ARCHIVER_API_URL" in done.stderr
    rows = task_rows(database_url)
    assert all(r["gone_at"] is None and r["not_found_count"] == 0 for r in rows.values())
    assert all(r["finalized_at"] is None for r in rows.values())
    sim.finish_all()
    for _ in range(2):  # a read, then the confirming read of tasks seen running
        done = run_archiver("sync", "-q", env=env_for(sim.base_url, database_url))
        assert done.returncode == 0, done.stderr
    assert all(r["finalized_at"] is not None for r in task_rows(database_url).values())


def test_gone_tasks_come_back_when_listed_named_or_rechecked(
    database_url: str, make_simulator
) -> None:
    """Tasks recorded as gone by mistake are polled again: listed, --task, --recheck-gone."""
    sim = active_archive(database_url, make_simulator)
    ids = sorted(task_rows(database_url))
    db = Database(database_url)

    def bury(task_ids: list[str]) -> None:
        with db.transaction() as conn:
            conn.execute(
                update(tasks)
                .where(tasks.c.id.in_(task_ids))
                .values(gone_at=utcnow(), finalized_at=utcnow(), not_found_count=3)
            )

    try:
        env = env_for(sim.base_url, database_url)
        bury(ids)  # all listed again on the next discovery
        assert run_archiver("sync", "-q", env=env).returncode == 0
        assert all(r["gone_at"] is None for r in task_rows(database_url).values())
        bury(ids[:2])
        done = run_archiver("sync", "-q", "--no-discover", "--task", ids[0], env=env)
        assert done.returncode == 0, done.stderr
        rows = task_rows(database_url)
        assert rows[ids[0]]["gone_at"] is None and rows[ids[1]]["gone_at"] is not None
        done = run_archiver("sync", "-q", "--no-discover", "--recheck-gone", env=env)
        assert done.returncode == 0, done.stderr
        assert all(r["gone_at"] is None for r in task_rows(database_url).values())
    finally:
        db.dispose()


def test_an_unknown_task_id_leaves_no_row(database_url: str, make_simulator) -> None:
    """--task with an id the API does not know fails that id (exit 1) and stores nothing."""
    sim = make_simulator(tasks=3, seed=82)
    sim.finish_all()
    known = sorted(sim.truth())[0]
    env = env_for(sim.base_url, database_url)
    done = run_archiver("sync", "-q", "--task", known, "--task", "tsk_doesnotexist", env=env)
    assert done.returncode == 1, done.stderr
    assert "tsk_doesnotexist" in done.stderr and "does not know" in done.stderr
    assert set(task_rows(database_url)) == {known}
    alone = run_archiver("sync", "-q", "--task", "tsk_doesnotexist", env=env)
    assert alone.returncode == 2, alone.stderr  # nothing proved the URL right
    assert set(task_rows(database_url)) == {known}


def test_a_dead_api_fails_fast_and_never_looks_healthy(tmp_path: Path) -> None:
    """A closed port: the pass is failed (exit 1) after at most one retry, says "refused",
    and status --max-age / --json / the metrics file report no success."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    prom = tmp_path / "archiver.prom"
    api = f"http://127.0.0.1:{closed_port()}/api/v1"
    done = run_archiver("sync", "-vv", "--metrics-file", str(prom), env=env_for(api, url))
    assert done.returncode == 1, done.stderr
    assert "connection refused" in done.stderr and "ConnectTimeout" not in done.stderr
    retries = [line for line in done.stderr.splitlines() if "retrying (attempt" in line]
    assert len(retries) <= 1, retries
    assert 'archiver_last_run_success{command="sync"} 0.0' in prom.read_text()
    stale = run_archiver("status", "--max-age", "1h", env={"ARCHIVER_DATABASE_URL": url})
    assert stale.returncode == 3, stale.stdout + stale.stderr
    report = json.loads(run_archiver("status", "--json", env={"ARCHIVER_DATABASE_URL": url}).stdout)
    assert report["health"]["last_success_at"] is None
    assert report["last_runs"][0]["outcome"] == "failed"
    # Two connection attempts in all, not the retries of every task: the pass failed fast.
    assert report["last_runs"][0]["requests"] == 2


def test_a_captive_portal_fails_the_pass(tmp_path: Path, make_simulator) -> None:
    """HTML 200s from a portal are retried, then the pass is failed (exit 1), not partial."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    sim = make_simulator(tasks=3, seed=83, captive_portal=True)
    done = run_archiver("sync", "-q", env=env_for(sim.base_url, url))
    assert done.returncode == 1, done.stderr
    assert "not a JSON document" in done.stderr
    stale = run_archiver("status", "--max-age", "1h", env={"ARCHIVER_DATABASE_URL": url})
    assert stale.returncode == 3


def test_a_404_listing_is_a_configuration_error(tmp_path: Path, make_simulator) -> None:
    """List Tasks answering 404 exits 2 with a message naming the URL to check."""
    sim = make_simulator(tasks=3, seed=84)
    wrong = sim.base_url.rsplit("/api/v1", 1)[0] + "/v1"
    done = run_archiver("sync", "-q", env=env_for(wrong, f"sqlite:///{tmp_path / 'a.db'}"))
    assert done.returncode == 2, done.stderr
    assert "List Tasks" in done.stderr and wrong in done.stderr
