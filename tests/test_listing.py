"""Nothing is dropped at the edges of listing (issue 9, item 3): tie groups no client can
page through, backfills that walk again, and malformed List Tasks items. Real HTTP to the
simulator, real SQLite and PostgreSQL, the real `archiver` command where the operator is
involved."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from archiver.config import ApiKey, ClientConfig, SyncOptions
from archiver.engine import BackfillPass, SyncPass, run_command
from archiver.store.database import Database
from archiver.store.schema import sync_runs
from archiver.store.state import get_state, put_state
from archiver.timestamps import utcnow
from tests.conftest import assert_matches_truth, client_config, run_archiver, stored_state
from tests.test_operator_safety import env_for, task_rows

START = 1_764_000_000  # the simulator's default first created_at


def backfill_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("backfill: ")]


def last_run(database_url: str) -> Any:
    db = Database(database_url)
    try:
        with db.reading() as conn:
            return conn.execute(select(sync_runs).order_by(sync_runs.c.id.desc())).first()
    finally:
        db.dispose()


# --- 1. a created_at shared by more tasks than one page holds ---------------------------


def test_an_unpageable_tie_group_is_partial_shown_imported_and_acknowledged(
    database_url: str, make_simulator, tmp_path: Path
) -> None:
    """200 tasks on one created_at: the pass is partial (exit 1) naming the created_at, the
    128 listed and --ids-file; status shows the group until --ack-unlisted; the ids-file
    import completes the archive; an acknowledged group only warns."""
    sim = make_simulator(tasks=260, events_per_task=1, seed=91, created_at_group=200)
    sim.finish_all()
    truth = sim.truth()
    group_at = min(entry["task"]["created_at"] for entry in truth.values())
    env = env_for(sim.base_url, database_url)

    done = run_archiver("sync", "-q", env=env)
    assert done.returncode == 1, done.stderr
    assert f"128 tasks share created_at={group_at}" in done.stderr
    assert "backfill --ids-file" in done.stderr and f"--ack-unlisted {group_at}" in done.stderr
    assert last_run(database_url).outcome == "partial"
    missing = set(truth) - set(task_rows(database_url))
    assert len(missing) == 72, "200 share the created_at, 128 can be listed"
    assert {truth[task_id]["task"]["created_at"] for task_id in missing} == {group_at}

    shown = run_archiver("status", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    [group] = json.loads(shown.stdout)["unlisted"]
    assert (group["created_at"], group["listed"], group["archived"]) == (group_at, 128, 128)
    assert group["command"] == "sync" and group["acknowledged_at"] is None
    text = run_archiver("status", env=env).stdout
    assert f"created_at={group_at}" in text and "128 listed, 128 archived" in text
    assert "--ids-file" in text and "--ack-unlisted" in text

    # A walk that meets the unacknowledged group again is partial again.
    again = run_archiver("backfill", "-q", env=env)
    assert again.returncode == 1 and f"created_at={group_at}" in again.stderr

    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# from the Smooth dashboard\n" + "\n".join(sorted(missing)) + "\n")
    imported = run_archiver("backfill", "-q", "--ids-file", str(ids_file), env=env)
    assert imported.returncode == 0, imported.stderr
    [group] = json.loads(run_archiver("status", "--json", env=env).stdout)["unlisted"]
    assert group["archived"] == 200

    for bad, expected in (("soon", "is not a created_at"), ("5", "no group of unlisted tasks")):
        refused = run_archiver("status", "--ack-unlisted", bad, env=env)
        assert refused.returncode == 2, refused.stderr
        assert expected in refused.stderr and "Traceback" not in refused.stderr
    acked = run_archiver("status", "--ack-unlisted", str(group_at), env=env)
    assert acked.returncode == 0, acked.stderr
    assert f"acknowledged created_at={group_at}: 128 listed, 200 archived" in acked.stdout
    assert "UNLISTED" not in acked.stdout
    assert json.loads(run_archiver("status", "--json", env=env).stdout)["unlisted"] == []

    quiet = run_archiver("backfill", "-q", env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "already acknowledged" in quiet.stderr
    db = Database(database_url)
    try:
        assert_matches_truth(db, sim)
    finally:
        db.dispose()


# --- 2. every backfill walks the listing for its range ---------------------------------


def test_a_finished_backfill_walks_again_and_finds_tasks_listed_late(
    database: Database, make_simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A task the API lists only later (below anything sync re-reads) is archived by the
    next backfill, which says what it walked; a backfill with nothing to do says why."""
    caplog.set_level(logging.INFO, logger="archiver")
    # Every 5th task is listed two hours after its creation; all have ended by now.
    sim = make_simulator(
        tasks=20, events_per_task=2, seed=92, late_list_delay_s=7200.0, initial_time=START + 1900
    )
    first = run_command(BackfillPass(), database, client_config(sim), SyncOptions())
    assert first.exit_code == 0, first.errors
    rows, _, _ = stored_state(database)
    assert len(rows) == 16
    sim.finish_all()  # the late tasks are listed now
    late = set(sim.truth()) - set(rows)
    assert len(late) == 4

    caplog.clear()
    second = run_command(BackfillPass(), database, client_config(sim), SyncOptions())
    assert second.exit_code == 0, second.errors
    assert_matches_truth(database, sim)
    assert second.stats.tasks_discovered == 4
    assert any(
        "20 task(s) listed, 4 new, 16 already archived" in line for line in backfill_log(caplog)
    ), backfill_log(caplog)

    caplog.clear()
    sim.reset_stats()
    third = run_command(BackfillPass(), database, client_config(sim), SyncOptions())
    assert third.exit_code == 0 and sim.stats["list"] >= 1 and sim.stats["get"] == 0
    assert any(
        "nothing to import: every listed task is already archived" in line
        for line in backfill_log(caplog)
    ), backfill_log(caplog)


def test_each_backfill_walks_the_range_it_asks_for(
    database: Database, make_simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """An earlier --since after a finished backfill imports the older tasks; a --since
    after every task says the API lists nothing there."""
    caplog.set_level(logging.INFO, logger="archiver")
    sim = make_simulator(tasks=20, events_per_task=1, seed=93, spacing_s=3600.0)
    sim.finish_all()
    created = sorted(entry["task"]["created_at"] for entry in sim.truth().values())

    def backfill(since: int) -> list[int]:
        when = datetime.fromtimestamp(since, tz=UTC)
        result = run_command(BackfillPass(since=when), database, client_config(sim), SyncOptions())
        assert result.exit_code == 0, result.errors
        rows, _, _ = stored_state(database)
        return sorted(row["created_at"] for row in rows.values())

    assert backfill(created[10]) == created[10:]
    caplog.clear()
    assert backfill(created[4]) == created[4:]
    assert any("6 new, 10 already archived" in line for line in backfill_log(caplog))
    caplog.clear()
    assert backfill(created[-1] + 1) == created[4:]
    assert any("the API lists no task since" in line for line in backfill_log(caplog))
    assert backfill(created[0]) == created


def test_only_an_interrupted_walk_of_the_same_range_resumes(
    database: Database, make_simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A walk cut short resumes at its cursor; once it finished, or for another range, the
    next backfill walks from the top."""
    caplog.set_level(logging.INFO, logger="archiver")
    sim = make_simulator(tasks=300, events_per_task=1, seed=94)
    sim.finish_all()
    created = sorted(entry["task"]["created_at"] for entry in sim.truth().values())
    with database.transaction() as conn:  # as a backfill killed mid-walk leaves it
        put_state(
            conn,
            "backfill",
            {"since": None, "next_t": created[100], "listing_done": False},
            utcnow(),
        )
    result = run_command(BackfillPass(), database, client_config(sim), SyncOptions())
    assert result.exit_code == 0, result.errors
    rows, _, _ = stored_state(database)
    assert sorted(row["created_at"] for row in rows.values()) == created[:100]
    assert any(
        f"resuming the interrupted listing walk over all history at t={created[100]}" in line
        for line in backfill_log(caplog)
    )
    with database.transaction() as conn:
        assert get_state(conn, "backfill")["listing_done"] is True

    # Another range's cut-short walk is not this range's: walked from the top.
    with database.transaction() as conn:
        put_state(
            conn,
            "backfill",
            {"since": "2020-01-01T00:00:00+00:00", "next_t": created[50], "listing_done": False},
            utcnow(),
        )
    caplog.clear()
    result = run_command(BackfillPass(), database, client_config(sim), SyncOptions())
    assert result.exit_code == 0, result.errors
    assert not any("resuming" in line for line in backfill_log(caplog))
    assert any(
        "300 task(s) listed, 200 new, 100 already archived" in line for line in backfill_log(caplog)
    ), backfill_log(caplog)
    assert_matches_truth(database, sim)


# --- 3. malformed List Tasks items ----------------------------------------------------


@pytest.mark.parametrize("command", ["sync", "backfill"])
def test_tasks_listed_malformed_are_archived_from_get_task(
    database: Database, make_simulator, command: str
) -> None:
    """Tasks List Tasks always serves malformed are tracked by id and read with Get Task:
    after incremental passes the archive is exactly the API's."""
    sim = make_simulator(
        tasks=60,
        events_per_task=4,
        seed=95,
        malformed_list_item_rate=0.3,
        malformed_list_listings=1_000_000,  # never heals in the listing
        initial_time=START + 20 * 60,
    )
    work = SyncPass() if command == "sync" else BackfillPass()
    for _ in range(5):
        result = run_command(work, database, client_config(sim), SyncOptions())
        assert result.exit_code == 0, result.errors
        sim.advance(600.0)
    sim.finish_all()
    result = run_command(work, database, client_config(sim), SyncOptions())
    assert result.exit_code == 0, result.errors
    if command == "backfill":  # a backfill reads each task once; running ones need a sync
        assert run_command(SyncPass(), database, client_config(sim), SyncOptions()).exit_code == 0
    assert sim.stats["list_malformed"] >= 10
    assert_matches_truth(database, sim)


def test_a_malformed_item_without_an_id_holds_the_discovery_watermark(
    database: Database,
) -> None:
    """A list item with no readable id fails the pass and keeps the watermark at or below
    it, so the next pass lists it again and archives it once it is well-formed."""
    listed: list[dict[str, Any]] = [
        {"id": "a", "status": "done", "created_at": 2000},
        {"status": 7, "created_at": 1500},  # no id: cannot be tracked
        {"id": "c", "status": "done", "created_at": 1000},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/task"):  # one page: fewer items than its size
            return httpx.Response(200, json={"r": listed})
        task_id = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200, json={"r": {"id": task_id, "status": "done", "events": []}})

    def run() -> Any:
        config = ClientConfig(api_url="http://api.test/api/v1", api_key=ApiKey("k-123456"))
        transport = httpx.MockTransport(handler)
        return run_command(SyncPass(), database, config, SyncOptions(), transport=transport)

    def watermark() -> Any:
        with database.transaction() as conn:
            return (get_state(conn, "discovery") or {}).get("newest_created_at")

    first = run()
    assert first.exit_code == 1 and first.outcome == "partial"
    assert any("no id can be read" in message for message in first.errors), first.errors
    assert watermark() == 1500
    listed.insert(0, {"id": "d", "status": "done", "created_at": 3000})
    listed.insert(0, {"status": "done"})  # neither id nor created_at: nothing moves
    assert run().exit_code == 1 and watermark() == 1500
    listed[:] = [t for t in listed if "id" in t] + [
        {"id": "b", "status": "done", "created_at": 1500}
    ]
    assert run().exit_code == 0 and watermark() == 3000
    rows, _, _ = stored_state(database)
    assert set(rows) == {"a", "b", "c", "d"}
