"""What the API does not promise (issue 9, items 4-6): terminal fields that settle late,
events repeated or filled in later, statuses the archiver does not know. Real HTTP to the
simulator, both databases, ground truth compared as multisets."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from archiver.config import SyncOptions
from archiver.engine import SyncPass, run_command
from archiver.simulator import Simulator
from archiver.stats import RunResult
from archiver.store.database import Database
from archiver.store.schema import tasks
from tests.conftest import assert_matches_truth, client_config, stored_state


def sync(db: Database, sim: Simulator, **options: object) -> RunResult:
    return run_command(SyncPass(), db, client_config(sim), SyncOptions(**options))  # type: ignore[arg-type]


def running_world(make_simulator, **knobs: object) -> Simulator:  # type: ignore[no-untyped-def]
    """Tasks that run for minutes, so the archiver sees them running before they end."""
    return make_simulator(
        tasks=8, events_per_task=12, seed=91, spacing_s=30.0, duration_s=(120.0, 300.0), **knobs
    )


def test_credits_that_settle_after_the_end_are_archived(database: Database, make_simulator) -> None:
    """A task seen running is read once more after it turns terminal: the settled
    credits_used is what the archive keeps, and the confirming read finalizes it."""
    sim = running_world(make_simulator, credits_settle_s=30.0)  # settles within a pass gap
    # The simulated account is a year old by the wall clock: count every task as fresh,
    # as tasks created in the last hour are in production.
    fresh = {"fresh_within_s": 10.0**9}
    for _ in range(12):
        assert sync(database, sim, **fresh).exit_code == 0
        sim.advance(40.0)
    sim.finish_all()  # past every task's end and its credits settling
    for _ in range(2):
        assert sync(database, sim, **fresh).exit_code == 0
    assert_matches_truth(database, sim)
    rows, _, _ = stored_state(database)
    assert all(r["finalized_at"] is not None for r in rows.values())


def test_a_fresh_terminal_task_waits_for_the_confirming_read(
    database: Database, make_simulator
) -> None:
    """The first terminal read of a task seen running does not finalize it; the next pass
    does, with one Get Task; settled history is final at its first read."""
    sim = running_world(make_simulator)
    initial = sync(database, sim)  # the newest tasks are running now, the oldest are done
    assert initial.exit_code == 0
    sim.finish_all()
    first = sync(database, sim)
    rows, _, _ = stored_state(database)
    seen_running = {t for t, r in rows.items() if r["seen_active"]}
    history = set(rows) - seen_running
    assert seen_running and history
    assert all(rows[t]["finalized_at"] is None for t in seen_running)
    assert all(rows[t]["finalized_at"] is not None for t in history)
    assert initial.stats.tasks_finalized + first.stats.tasks_finalized == len(history)
    sim.reset_stats()
    second = sync(database, sim)
    assert second.stats.tasks_finalized == len(seen_running)
    assert all(sim.stats[f"get:{t}"] == 1 for t in seen_running)  # one confirming read
    assert all(sim.stats[f"get:{t}"] == 0 for t in history)


def test_confirm_after_waits_that_long(database: Database, make_simulator) -> None:
    """With confirm_after_s, the confirming read must come that long after the first."""
    sim = running_world(make_simulator)
    sync(database, sim)
    sim.finish_all()
    sync(database, sim, confirm_after_s=600.0)
    again = sync(database, sim, confirm_after_s=600.0)
    assert again.stats.tasks_finalized == 0  # too soon
    with database.transaction() as conn:  # as if eleven minutes went by
        seen = conn.execute(
            select(tasks.c.id, tasks.c.terminal_seen_at).where(
                tasks.c.terminal_seen_at.is_not(None)
            )
        ).all()
        for task_id, at in seen:
            conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id)
                .values(terminal_seen_at=at - timedelta(minutes=11))
            )
    later = sync(database, sim, confirm_after_s=600.0)
    assert later.exit_code == 0, later.errors
    assert later.stats.tasks_finalized > 0
    rows, _, _ = stored_state(database)
    assert all(r["finalized_at"] is not None for r in rows.values())


def test_repeated_and_filled_in_events_match_ground_truth(
    database: Database, make_simulator
) -> None:
    """Identical events without an id are all kept; an event whose payload is filled in
    later keeps one row with the final payload; nothing is stored twice."""
    sim = running_world(
        make_simulator,
        null_event_id_rate=0.4,
        duplicate_event_rate=0.5,
        late_payload_rate=0.5,
        late_payload_delay_s=20.0,  # filled in within a pass gap
        event_tie_rate=0.3,
    )
    fresh = {"fresh_within_s": 10.0**9}  # the simulated account is a year old
    for _ in range(12):
        assert sync(database, sim, **fresh).exit_code == 0
        sim.advance(35.0)
    sim.finish_all()
    for _ in range(2):
        assert sync(database, sim, **fresh).exit_code == 0
    truth = sim.truth()
    repeated = sum(
        1
        for entry in truth.values()
        for a, b in zip(entry["events"], entry["events"][1:], strict=False)
        if a == b and a["id"] is None
    )
    assert repeated > 0, "the scenario has no repeated events; pick another seed"
    assert_matches_truth(database, sim)


def test_an_unknown_status_is_stored_and_polled_less_often(
    database: Database, make_simulator
) -> None:
    """A status the archiver does not know is stored as sent, never finalized, and the
    task is held back for a growing interval between polls."""
    sim = make_simulator(
        tasks=4,
        events_per_task=4,
        seed=92,
        unknown_final_status_rate=1.0,
        unknown_final_status="expired",
    )
    sim.finish_all()
    first = sync(database, sim)
    assert first.exit_code == 0
    rows, _, _ = stored_state(database)
    assert {r["status"] for r in rows.values()} == {"expired"}
    assert all(r["finalized_at"] is None for r in rows.values())
    waits = [r["next_poll_at"] for r in rows.values()]
    assert all(w is not None for w in waits)
    sim.reset_stats()
    sync(database, sim)
    assert sim.stats["get"] == 0  # held back, not polled at full rate
    with database.transaction() as conn:  # the first wait is over
        conn.execute(update(tasks).values(next_poll_at=None))
    sync(database, sim)
    rows2, _, _ = stored_state(database)
    for task_id, row in rows2.items():
        assert row["unknown_status_polls"] == 2
        gap = row["next_poll_at"] - row["last_polled_at"]
        first_gap = rows[task_id]["next_poll_at"] - rows[task_id]["last_polled_at"]
        assert gap > first_gap  # the interval grows
