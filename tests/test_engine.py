"""The sync engine end to end: real HTTP to the simulator, real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from archiver.config import SyncOptions
from archiver.engine import BackfillPass, SyncPass, run_command
from archiver.store.database import Database
from archiver.store.schema import sync_runs, task_events, tasks
from archiver.store.tasks import insert_task_stubs
from archiver.timestamps import utcnow
from tests.conftest import assert_matches_truth, client_config, stored_state


def sync(db: Database, sim, **options) -> object:  # type: ignore[no-untyped-def]
    return run_command(SyncPass(), db, client_config(sim), SyncOptions(**options))


def test_a_pass_tunes_the_garbage_collector_and_restores_it(
    database: Database, make_simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a pass start-up objects are frozen and young collections rarer; after, as before."""
    import gc

    from archiver import engine

    seen: list[tuple[tuple[int, int, int], int]] = []
    read_task = engine.SyncEngine._read_task

    async def watching(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        return await read_task(self, *args, **kwargs)

    monkeypatch.setattr(engine.SyncEngine, "_read_task", watching)
    sim = make_simulator(tasks=2, seed=3)
    sim.finish_all()
    before = gc.get_threshold()
    assert sync(database, sim).exit_code == 0
    assert seen and all(t[0] == engine.GC_YOUNG_THRESHOLD and frozen > 0 for t, frozen in seen)
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, 0)


def test_sync_archives_every_task_and_event(database: Database, make_simulator) -> None:
    """One sync after every task finished stores exactly the API's tasks and events."""
    sim = make_simulator(tasks=15, events_per_task=12, seed=3)
    sim.finish_all()
    result = sync(database, sim)
    assert result.exit_code == 0, result.errors
    assert_matches_truth(database, sim)
    rows, _, _ = stored_state(database)
    assert all(row["finalized_at"] is not None for row in rows.values())


def test_incremental_passes_with_nasty_events_lose_nothing_and_store_nothing_twice(
    database: Database, make_simulator
) -> None:
    """Ties at the high-water mark, null ids and null timestamps across many passes."""
    sim = make_simulator(
        tasks=12,
        events_per_task=25,
        seed=11,
        event_tie_rate=0.4,
        null_event_id_rate=0.3,
        null_event_timestamp_rate=0.1,
        spacing_s=20.0,
        duration_s=(60.0, 400.0),
    )
    for _ in range(12):
        result = sync(database, sim, concurrency=4)
        assert result.exit_code == 0, result.errors
        sim.advance(37.0)
    sim.finish_all()
    sync(database, sim)
    assert_matches_truth(database, sim)


def test_server_that_ignores_event_t_causes_no_duplicates(
    database: Database, make_simulator
) -> None:
    """A server returning every event on every poll still yields one row per event."""
    sim = make_simulator(tasks=6, events_per_task=15, seed=5, ignore_event_t=True)
    for _ in range(6):
        sync(database, sim)
        sim.advance(120.0)
    sim.finish_all()
    sync(database, sim)
    assert_matches_truth(database, sim)


def test_finalized_tasks_are_never_polled_again(database: Database, make_simulator) -> None:
    """Once every task is finalized, a further sync makes no Get Task request."""
    sim = make_simulator(tasks=8, events_per_task=5, seed=2)
    sim.finish_all()
    sync(database, sim)
    sim.reset_stats()
    result = sync(database, sim)
    assert sim.stats["get"] == 0
    assert result.stats.tasks_polled == 0


def test_cost_grows_with_active_tasks_not_history(database: Database, make_simulator) -> None:
    """10,000 finalized tasks and 10 running ones: about 10 Get Task calls and 1-2 list pages."""
    sim = make_simulator(tasks=10, events_per_task=20, seed=9, duration_s=(3000.0, 4000.0))
    sync(database, sim)  # tracks the 10 running tasks
    old = datetime(2025, 1, 1, tzinfo=UTC)
    with database.transaction() as conn:
        conn.execute(
            insert(tasks),
            [
                {
                    "id": f"old_{i:05d}",
                    "status": "done",
                    "created_at": 1_700_000_000 + i,
                    "first_seen_at": old,
                    "finalized_at": old,
                    "full_read_at": old,
                }
                for i in range(10_000)
            ],
        )
    sim.advance(60.0)
    sim.reset_stats()
    result = sync(database, sim)
    assert result.exit_code == 0
    assert sim.stats["get"] == 10
    assert 1 <= sim.stats["list"] <= 2


def test_list_paging_keeps_tasks_that_share_created_at(database: Database, make_simulator) -> None:
    """Groups of 40 tasks on one created_at (more than a page of 32) are all discovered."""
    sim = make_simulator(tasks=130, events_per_task=2, seed=4, created_at_group=40)
    sim.finish_all()
    result = sync(database, sim, concurrency=16)
    assert result.exit_code == 0, result.errors
    assert_matches_truth(database, sim)


def test_gone_task_is_recorded_and_does_not_fail_the_pass(
    database: Database, make_simulator
) -> None:
    """404s exit 0; after three in a row the task is gone and finalized; it is asked again
    only while the API still lists it, and then goes straight back to gone."""
    probe = make_simulator(tasks=5, seed=8)
    victim = sorted(probe.truth())[0]
    sim = make_simulator(tasks=5, seed=8, gone_task_ids=frozenset({victim}))
    sim.finish_all()
    for attempt in (1, 2, 3):
        result = sync(database, sim)
        assert result.exit_code == 0
        rows, _, _ = stored_state(database)
        assert "404" in rows[victim]["last_error"]
        assert rows[victim]["not_found_count"] == attempt
        assert (rows[victim]["gone_at"] is not None) == (attempt == 3)
    assert rows[victim]["finalized_at"] is not None
    assert result.stats.tasks_gone == 1
    sim.reset_stats()
    sync(database, sim, discover=False)
    assert sim.stats[f"get:{victim}"] == 0
    sync(database, sim)  # listed again: asked once, gone again
    assert sim.stats[f"get:{victim}"] == 1
    rows, _, _ = stored_state(database)
    assert rows[victim]["gone_at"] is not None


def test_a_single_404_is_not_fatal_for_a_task(database: Database, make_simulator) -> None:
    """A task that answers 404 once and then normally is archived in full, not lost."""
    probe = make_simulator(tasks=4, seed=26)
    flaky = sorted(probe.truth())[1]
    glitch = make_simulator(tasks=4, seed=26, gone_task_ids=frozenset({flaky}))
    glitch.finish_all()
    sync(database, glitch)
    healthy = make_simulator(tasks=4, seed=26)
    healthy.finish_all()
    assert sync(database, healthy).exit_code == 0
    assert_matches_truth(database, healthy)
    rows, _, _ = stored_state(database)
    assert rows[flaky]["gone_at"] is None and rows[flaky]["not_found_count"] == 0


def test_malformed_task_fails_alone_with_its_error_recorded(
    database: Database, make_simulator
) -> None:
    """A malformed payload fails that task only (exit 1); every other task is archived;
    the task is asked again on the next passes and held back only after three failures."""
    probe = make_simulator(tasks=6, seed=12)
    bad = sorted(probe.truth())[2]
    sim = make_simulator(tasks=6, seed=12, malformed_task_ids=frozenset({bad}))
    sim.finish_all()
    result = sync(database, sim)
    assert result.exit_code == 1
    assert result.stats.errors == 1
    rows, _, _ = stored_state(database)
    assert rows[bad]["finalized_at"] is None
    assert rows[bad]["last_error"] and bad in rows[bad]["last_error"]
    assert rows[bad]["next_poll_at"] is None and rows[bad]["error_count"] == 1
    for streak in (2, 3):
        sim.reset_stats()
        assert sync(database, sim).exit_code == 1
        assert sim.stats[f"get:{bad}"] >= 1  # not held back after one or two failures
        rows, _, _ = stored_state(database)
        assert rows[bad]["error_count"] == streak
    assert rows[bad]["next_poll_at"] is not None  # the third failure in a row holds it back
    sim.reset_stats()
    sync(database, sim)
    assert sim.stats[f"get:{bad}"] == 0
    others = [r for task_id, r in rows.items() if task_id != bad]
    assert all(r["finalized_at"] is not None for r in others)
    with database.transaction() as conn:
        runs = conn.execute(select(sync_runs).order_by(sync_runs.c.id)).all()
    assert [(r.outcome, r.errors) for r in runs] == [("partial", 1)] * 3 + [("ok", 0)]


@pytest.mark.parametrize(("event_unit", "created_unit"), [("ms", "s"), ("s", "ms")])
def test_utc_columns_are_right_in_seconds_and_milliseconds(
    database: Database, make_simulator, event_unit: str, created_unit: str
) -> None:
    """*_utc columns derive from raw values whichever unit the API uses."""
    sim = make_simulator(
        tasks=3, seed=1, event_timestamp_unit=event_unit, created_at_unit=created_unit
    )
    sim.finish_all()
    sync(database, sim)
    with database.transaction() as conn:
        for row in conn.execute(select(tasks.c.created_at, tasks.c.created_at_utc)):
            seconds = row.created_at / 1000 if created_unit == "ms" else row.created_at
            assert row.created_at_utc.replace(tzinfo=UTC).timestamp() == pytest.approx(seconds)
        stamps = conn.execute(
            select(task_events.c.timestamp, task_events.c.timestamp_utc).where(
                task_events.c.timestamp.is_not(None)
            )
        ).all()
    assert stamps
    for raw, utc in stamps:
        seconds = raw / 1000 if event_unit == "ms" else raw
        assert utc.replace(tzinfo=UTC).timestamp() == pytest.approx(seconds, abs=1e-3)
        assert 2025 <= utc.year <= 2027


def test_backfill_imports_everything_and_sync_then_has_nothing_to_do(
    database: Database, make_simulator
) -> None:
    """backfill reads every task from event_t=0; a later sync polls nothing finalized."""
    sim = make_simulator(tasks=40, events_per_task=6, seed=21, created_at_group=3)
    sim.finish_all()
    result = run_command(BackfillPass(), database, client_config(sim), SyncOptions(concurrency=8))
    assert result.exit_code == 0, result.errors
    assert_matches_truth(database, sim)
    assert result.stats.tasks_finalized == 40
    sim.reset_stats()
    sync(database, sim)
    assert sim.stats["get"] == 0


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_bounds_get_task_requests_in_flight_and_fills_them(
    database: Database, make_simulator, concurrency: int
) -> None:
    """A pass keeps exactly --concurrency Get Task requests in flight, never more, although
    it runs more workers than that; its listing runs beside them."""
    sim = make_simulator(tasks=30, events_per_task=3, seed=5, latency_ms=40.0)
    sim.finish_all()
    options = SyncOptions(concurrency=concurrency)
    result = run_command(BackfillPass(), database, client_config(sim), options)
    assert result.exit_code == 0, result.errors
    assert_matches_truth(database, sim)
    assert sim.stats["get_in_flight_max"] == concurrency


def test_no_request_waiting_for_a_slot_is_sent_once_the_pass_stops(
    database: Database, make_simulator
) -> None:
    """Workers waiting for a request slot when --max-runtime passes send nothing: the pass
    only finishes the request in flight, and the next pass reads the rest exactly once."""
    latency_s, runtime_s = 0.3, 1.0
    sim = make_simulator(tasks=12, events_per_task=3, seed=8, latency_ms=latency_s * 1000)
    sim.finish_all()
    with database.transaction() as conn:
        insert_task_stubs(conn, sorted(sim.truth()), utcnow())
    result = sync(database, sim, concurrency=1, discover=False, max_runtime_s=runtime_s)
    assert result.exit_code == 0, result.errors
    # One slot, each request at least latency_s long: at most this many start in time.
    assert 1 <= sim.stats["get"] <= int(runtime_s / latency_s) + 1
    assert sim.stats["get"] == result.stats.tasks_polled
    assert sync(database, sim, concurrency=4, discover=False).exit_code == 0
    assert_matches_truth(database, sim)


def test_backfill_since_skips_older_tasks(database: Database, make_simulator) -> None:
    """--since keeps tasks created on or after the date and stops listing below it."""
    sim = make_simulator(tasks=20, seed=22, spacing_s=3600.0)
    sim.finish_all()
    created = sorted(entry["task"]["created_at"] for entry in sim.truth().values())
    since = datetime.fromtimestamp(created[10], tz=UTC)
    result = run_command(BackfillPass(since=since), database, client_config(sim), SyncOptions())
    assert result.exit_code == 0
    rows, _, _ = stored_state(database)
    assert sorted(r["created_at"] for r in rows.values()) == created[10:]


def test_backfill_from_ids(database: Database, make_simulator) -> None:
    """backfill with explicit ids archives just those; an unknown id records its 404."""
    sim = make_simulator(tasks=10, seed=23)
    sim.finish_all()
    wanted = sorted(sim.truth())[:3]
    result = run_command(
        BackfillPass(ids=[*wanted, "tsk_nope"]), database, client_config(sim), SyncOptions()
    )
    assert result.exit_code == 0
    rows, _, _ = stored_state(database)
    assert set(rows) == {*wanted, "tsk_nope"}
    assert "404" in rows["tsk_nope"]["last_error"] and rows["tsk_nope"]["finalized_at"] is None
    assert all(rows[t]["finalized_at"] is not None for t in wanted)


def test_sync_task_option_tracks_only_the_named_task(database: Database, make_simulator) -> None:
    """--task polls just that task (tracked though never listed) and skips discovery."""
    sim = make_simulator(tasks=5, seed=24)
    sim.finish_all()
    one = sorted(sim.truth())[1]
    result = sync(database, sim, task_ids=(one,))
    assert result.exit_code == 0
    rows, _, _ = stored_state(database)
    assert set(rows) == {one}
    assert sim.stats["list"] == 0


def test_discovery_watermark_advances_so_listing_cost_stays_flat(
    database: Database, make_simulator
) -> None:
    """Each incremental pass lists about one page, however much history has piled up."""
    from archiver.store.state import get_state

    sim = make_simulator(
        tasks=400, events_per_task=1, seed=25, spacing_s=60.0, initial_time=1_764_000_000 + 60 * 40
    )
    sync(database, sim)
    pages = []
    for _ in range(8):
        sim.advance(600.0)  # ten new tasks per pass
        sim.reset_stats()
        assert sync(database, sim).exit_code == 0
        pages.append(sim.stats["list"])
        with database.transaction() as conn:
            state = get_state(conn, "discovery")
        newest = max(e["task"]["created_at"] for e in sim.truth().values())
        assert state == {"newest_created_at": newest}
    assert max(pages) <= 2, pages


def test_an_api_that_ignores_the_list_cursor_cannot_loop_forever(database: Database) -> None:
    """A List Tasks that returns the same full page for every t stops with a recorded error."""
    import httpx

    from archiver.config import ApiKey, ClientConfig

    page = {"r": [{"id": f"t{i}", "status": "done", "created_at": 1000 + i} for i in range(32)]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/task"):
            return httpx.Response(200, json=page)
        task_id = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200, json={"r": {"id": task_id, "status": "done", "events": []}})

    config = ClientConfig(api_url="http://api.test/api/v1", api_key=ApiKey("k-123456"))
    result = run_command(
        SyncPass(), database, config, SyncOptions(), transport=httpx.MockTransport(handler)
    )
    assert result.exit_code == 1
    assert any("did not move below" in message for message in result.errors)
    rows, _, _ = stored_state(database)
    # No created_at tells whether they are settled history: a second read confirms them.
    assert len(rows) == 32 and all(r["terminal_seen_at"] is not None for r in rows.values())
    run_command(SyncPass(), database, config, SyncOptions(), transport=httpx.MockTransport(handler))
    rows, _, _ = stored_state(database)
    assert all(r["finalized_at"] is not None for r in rows.values())


def test_max_runtime_polls_the_least_recently_polled_task_first(
    database: Database, make_simulator
) -> None:
    """A pass cut short by --max-runtime polls the task left unpolled longest (here the
    oldest) first, so newer active tasks cannot starve it."""
    sim = make_simulator(
        tasks=20, events_per_task=5, seed=21, duration_s=(5000.0, 6000.0), latency_ms=150.0
    )
    assert sync(database, sim, concurrency=4).exit_code == 0  # every task polled once
    created = {task_id: entry["task"]["created_at"] for task_id, entry in sim.truth().items()}
    assert len(created) == 20
    oldest = min(created, key=lambda task_id: (created[task_id], task_id))
    newer = tuple(task_id for task_id in created if task_id != oldest)
    for _ in range(2):  # earlier passes reached only the newer tasks
        sim.advance(30.0)
        assert sync(database, sim, concurrency=4, task_ids=newer).exit_code == 0
    sim.advance(30.0)
    sim.reset_stats()
    result = sync(database, sim, concurrency=1, max_runtime_s=1.5)
    assert result.exit_code == 0, result.errors
    assert 1 <= result.stats.tasks_polled < len(created), "the pass was not cut short"
    assert sim.stats[f"get:{oldest}"] == 1
