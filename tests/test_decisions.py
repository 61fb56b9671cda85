"""The engine's decisions, table by table, with no event loop, database or HTTP: each row
is a rule of docs/architecture.md's exactly-once invariants.

Invariants 1 (a task's events and its mark commit together, under its lease) and 7 (one
run per task, one run per command) are properties of storage and concurrency, not of a
decision: tests/test_writer.py, tests/test_locks.py and tests/test_crash.py hold them.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from archiver.config import MAX_PAGE_SIZE, SyncOptions
from archiver.engine.decisions import (
    NotFoundPlan,
    PageStep,
    PollSave,
    TaskCursor,
    error_backoff,
    failure_name,
    first_read,
    judge_not_found,
    needs_sweep,
    newest_plausible,
    newly_unknown_status,
    next_page,
    pass_outcome,
    plan_save,
    stop_below,
    usable_watermark,
    watermark_after_walk,
    with_artifacts,
)
from archiver.exceptions import (
    ApiUnreachable,
    ApiUrlWrong,
    ArchiverError,
    AuthError,
    StorageError,
)
from archiver.models import TaskEvent, TaskInfo, keyed_events
from archiver.stats import RunStats

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD = int((NOW - timedelta(days=30)).timestamp())  # settled history (seconds)
FRESH = int((NOW - timedelta(minutes=5)).timestamp())  # created within fresh_within
OPTIONS = SyncOptions(confirm_after_s=600.0, fresh_within_s=3600.0, error_backoff_s=60.0)


def cursor(**fields: Any) -> TaskCursor:
    base: dict[str, Any] = {"event_t": 0, "full_read": False, "finalized": False}
    return TaskCursor(**{**base, "error_count": 0, **fields})


def task(status: str = "done", created_at: int | None = OLD) -> TaskInfo:
    return TaskInfo(id="tsk_1", status=status, created_at=created_at)


# --- invariant 2: polls ask for events after event_t - 1 ------------------------------


@pytest.mark.parametrize(
    ("state", "from_zero", "asks"),
    [
        (cursor(finalized=True, event_t=5), False, None),  # final: never read again
        (cursor(event_t=0), False, 0),  # nothing stored yet: everything
        (cursor(event_t=1_700), False, 1_699),  # the mark's timestamp is re-read
        (cursor(event_t=1_700, terminal_seen_at=NOW), False, 0),  # the confirming full read
        (cursor(event_t=1_700), True, 0),  # backfill reads in full
    ],
)
def test_a_poll_asks_from_one_below_the_mark_or_from_zero(
    state: TaskCursor, from_zero: bool, asks: int | None
) -> None:
    """Polls ask after event_t - 1; full reads (first, confirming, backfill) ask from 0."""
    assert first_read(state, from_zero=from_zero) == asks


# --- invariant 3: event identity -----------------------------------------------------------


def test_an_event_with_an_id_keeps_its_key_when_its_payload_is_filled_in_later() -> None:
    """(id, name, timestamp) identify an event with an id, so the later payload updates it."""
    early = TaskEvent("browser_action", None, "ev1", 10)
    later = TaskEvent("browser_action", {"text": "filled in"}, "ev1", 10)
    assert keyed_events([early])[0][0] == keyed_events([later])[0][0]


@pytest.mark.parametrize(
    ("first", "second", "same_key"),
    [
        (TaskEvent("log", {"a": 1}, None, 10), TaskEvent("log", {"a": 1}, None, 10), False),
        (TaskEvent("log", {"a": 1}, None, 10), TaskEvent("log", {"a": 1}, None, 11), False),
        (TaskEvent("log", {"a": 1}, None, 10), TaskEvent("log", {"a": 2}, None, 10), False),
    ],
)
def test_events_without_an_id_are_their_content_and_repeats_are_numbered(
    first: TaskEvent, second: TaskEvent, same_key: bool
) -> None:
    """Two identical events in one response are two rows; the first keeps the lone key."""
    keys = [key for key, _ in keyed_events([first, second])]
    assert (keys[0] == keys[1]) is same_key
    assert keys[0] == keyed_events([first])[0][0]


# --- invariant 4: a terminal task is swept, confirmed when fresh, and final with artifacts -


@pytest.mark.parametrize(
    ("status", "full_read", "sweep"),
    [
        ("done", False, True),
        ("done", True, False),
        ("running", False, False),
        ("paused", False, False),
    ],
)
def test_a_terminal_task_read_by_cursor_is_swept_from_zero(
    status: str, full_read: bool, sweep: bool
) -> None:
    """A cursor misses null timestamps and late events: a terminal read sweeps from 0."""
    assert needs_sweep(task(status), full_read=full_read) is sweep


@pytest.mark.parametrize(
    ("read", "state", "full_read", "final", "terminal_seen"),
    [
        (task("running"), cursor(), True, False, False),  # still active
        (task("done"), cursor(), False, False, False),  # not swept: never final
        (task("done", OLD), cursor(), True, True, True),  # settled history: final at once
        (task("done", OLD), cursor(seen_active=True), True, False, True),  # seen running
        (task("done", FRESH), cursor(), True, False, True),  # fresh: waits to be confirmed
        (task("done", None), cursor(), True, False, True),  # no created_at: treated as fresh
        (
            task("done", FRESH),
            cursor(terminal_seen_at=NOW - timedelta(minutes=11)),
            True,
            True,
            True,
        ),
        (
            task("done", FRESH),
            cursor(terminal_seen_at=NOW - timedelta(minutes=1)),
            True,
            False,
            True,
        ),
        (task("failed", OLD), cursor(), True, True, True),
        (task("cancelled", OLD), cursor(), True, True, True),
        (task("expired", OLD), cursor(), True, False, False),  # unknown: never terminal
    ],
)
def test_when_a_poll_finalizes_its_task(
    read: TaskInfo, state: TaskCursor, full_read: bool, final: bool, terminal_seen: bool
) -> None:
    """Final only after a full read of a terminal task that is history or confirmed later."""
    save = plan_save(read, state, [], full_read=full_read, options=OPTIONS, now=NOW)
    assert (save.finalize, save.terminal_seen) == (final, terminal_seen)
    assert save.seen_active is not read.is_terminal


@pytest.mark.parametrize(("artifacts_final", "final"), [(True, True), (False, False)])
def test_with_downloads_a_task_is_final_only_once_its_artifacts_are(
    artifacts_final: bool, final: bool
) -> None:
    """--downloads: a pending artifact keeps the task open for a later pass."""
    save = PollSave(task=task(), events=[], full_read=True, finalize=True)
    assert with_artifacts(save, artifacts_final=artifacts_final).finalize is final
    assert not with_artifacts(replace_finalize(save), artifacts_final=True).finalize


def replace_finalize(save: PollSave) -> PollSave:
    return PollSave(task=save.task, events=save.events, full_read=save.full_read, finalize=False)


@pytest.mark.parametrize(
    ("previous_polls", "polls", "wait"),
    [(0, 1, timedelta(seconds=60)), (1, 2, timedelta(seconds=120)), (20, 21, timedelta(hours=1))],
)
def test_an_unknown_status_is_asked_about_less_and_less_often(
    previous_polls: int, polls: int, wait: timedelta
) -> None:
    """A status the archiver does not know: stored, never final, polled at a growing interval."""
    state = cursor(unknown_polls=previous_polls, status="paused")
    save = plan_save(task("paused"), state, [], full_read=True, options=OPTIONS, now=NOW)
    assert (save.finalize, save.unknown_polls, save.next_poll_at) == (False, polls, NOW + wait)
    assert not newly_unknown_status(task("paused"), state)  # logged once per task
    assert newly_unknown_status(task("paused"), cursor(status="running"))


# --- invariant 5: a 404 counts only in a pass that proved the API URL right -----------------


@pytest.mark.parametrize(
    ("found", "explicit", "successes", "expected"),
    [
        ([], set(), 0, NotFoundPlan()),
        (
            [("a", "404"), ("b", "404")],
            set(),
            0,
            NotFoundPlan(url_wrong="Get Task answered HTTP 404 for every task asked (2: a, b)"),
        ),
        ([("a", "404")], set(), 3, NotFoundPlan(count=[("a", "404")])),
        (
            [("a", "404"), ("n", "404")],
            {"n"},
            1,
            NotFoundPlan(
                drop_stubs=["n"],
                count=[("a", "404")],
                errors=[("n", "404 The API does not know this id; nothing was stored.")],
            ),
        ),
        ([("n", "404")], {"n"}, 0, NotFoundPlan(drop_stubs=["n"], url_wrong="Get Task answered")),
    ],
)
def test_a_404_buries_nothing_unless_the_pass_proved_the_url_right(
    found: list[tuple[str, str]], explicit: set[str], successes: int, expected: NotFoundPlan
) -> None:
    """No well-formed answer in the pass: the URL is suspect (exit 2) and no task is touched;
    an id first named in this pass leaves no row either way."""
    plan = judge_not_found(found, new_explicit=explicit, successes=successes, api_url="http://x")
    assert (plan.drop_stubs, plan.count, plan.errors) == (
        expected.drop_stubs,
        expected.count,
        expected.errors,
    )
    if expected.url_wrong is None:
        assert plan.url_wrong is None
    else:
        assert plan.url_wrong is not None and plan.url_wrong.startswith(expected.url_wrong)
        assert "No task was recorded as gone" in plan.url_wrong


# --- invariant 6: held back only after three failed passes in a row -------------------------


@pytest.mark.parametrize(
    ("failed_before", "held"),
    [
        (0, None),
        (1, None),
        (2, timedelta(seconds=60)),
        (3, timedelta(seconds=120)),
        (10, timedelta(hours=1)),
    ],
)
def test_a_failing_task_is_held_back_only_from_its_third_failure(
    failed_before: int, held: timedelta | None
) -> None:
    """One clean pass after a fault burst converges; a task failing for good waits, capped."""
    assert error_backoff(failed_before, OPTIONS) == held


# --- invariant 8: the listing drops nothing silently ----------------------------------------


@pytest.mark.parametrize(
    ("t", "size", "stamps", "step"),
    [
        (None, 32, [50, 40, 30], PageStep(next_t=31, size=32)),  # boundary group re-read
        (31, 32, [30, 20], PageStep(next_t=21, size=32)),
        (None, 32, [40, 40], PageStep(next_t=None, size=MAX_PAGE_SIZE, again=True)),
        (None, MAX_PAGE_SIZE, [40, 40], PageStep(next_t=40, size=32, unlisted=40)),
        (40, MAX_PAGE_SIZE, [40, 40], None),  # an unlisted group that does not move: error
        (30, 32, [50, 40], None),  # the API ignored the cursor: error
        (None, 32, [], None),  # nothing to page by: error
    ],
)
def test_the_listing_pages_down_without_losing_a_boundary_group(
    t: int | None, size: int, stamps: list[int], step: PageStep | None
) -> None:
    """Next page at oldest + 1; a tie page is re-read bigger, then recorded as unlisted; a
    cursor that does not move down stops the walk with an error instead of looping."""
    got = next_page(t, size, 32, stamps)
    if step is None:
        assert got.error is not None and got.next_t is None
    else:
        assert got == step


@pytest.mark.parametrize(
    ("newest", "known", "held", "after"),
    [
        (100, 80, [], 100),  # a complete walk moves the watermark up
        (100, 80, [90], 90),  # a malformed item without id holds it at its created_at
        (100, 80, [None], 80),  # ... or where it was, when its created_at is unreadable
        (None, None, [], None),
    ],
)
def test_the_watermark_never_passes_an_item_that_could_not_be_tracked(
    newest: int | None, known: int | None, held: list[int | None], after: int | None
) -> None:
    """The next pass lists an untrackable item again."""
    assert watermark_after_walk(newest, known, held) == after


def test_a_created_at_in_the_future_is_no_watermark() -> None:
    """Absurd or other-unit created_at values neither stop discovery nor become the mark."""
    horizon = NOW.timestamp() + 600
    assert usable_watermark(int(NOW.timestamp()), horizon_s=horizon) == int(NOW.timestamp())
    next_year = int((NOW + timedelta(days=365)).timestamp())
    assert usable_watermark(next_year, horizon_s=horizon) is None
    assert usable_watermark(next_year * 1000, horizon_s=horizon) is None  # milliseconds too
    assert newest_plausible(None, [10**13, 100], horizon) == 100
    assert stop_below(None, 600) is None
    assert stop_below(1_000_000, 600) == 1_000_000 - 600
    assert stop_below(1_700_000_000_000, 600) == 1_700_000_000_000 - 600_000  # milliseconds


# --- the outcome of a pass --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "successes", "errors", "stop", "listing", "outcome", "skipped"),
    [
        (10, 10, 0, None, None, None, 0),  # ok
        (10, 9, 1, None, None, ("partial", 1), 0),
        (5, 0, 5, None, None, ("failed", 1), 0),  # not one good answer: never green
        (10, 10, 1, None, "discovery stopped", ("failed", 1), 0),  # new tasks may be missing
        (10, 10, 0, signal.SIGINT, None, ("interrupted", 130), 0),
        (10, 0, 0, signal.SIGTERM, None, ("interrupted", 143), 0),
        (10, 10, 0, None, None, ("partial", 1), 3),  # skipped work is never a silent "ok"
        (0, 0, 0, None, None, ("partial", 1), 3),  # every task leased elsewhere: no request
        (10, 10, 0, signal.SIGTERM, None, ("interrupted", 143), 3),
    ],
)
def test_the_outcome_of_a_pass(
    requests: int,
    successes: int,
    errors: int,
    stop: int | None,
    listing: str | None,
    outcome: tuple[str, int] | None,
    skipped: int,
) -> None:
    """A pass is ok, partial, failed or interrupted by these rules, in this order."""
    stats = RunStats(requests=requests, errors=errors, skipped_leased=skipped)
    got = pass_outcome(
        stats,
        ["first error"] * errors,
        successes=successes,
        stop_signal=stop,
        listing_error=listing,
        api_url="http://x",
    )
    assert (got[:2] if got else None) == outcome


@pytest.mark.parametrize(
    ("fatal", "outcome"),
    [
        (AuthError("the Smooth API at http://x rejected the key (HTTP 401)"), ("failed", 2)),
        (ApiUrlWrong("List Tasks answered HTTP 404"), ("failed", 2)),
        (ApiUnreachable("cannot connect"), ("failed", 1)),
        (StorageError("disk full"), ("failed", 1)),
    ],
)
def test_an_error_that_ends_a_pass_fails_it_and_is_named(
    fatal: ArchiverError, outcome: tuple[str, int]
) -> None:
    """A pass ended by an error (key, URL, network, storage) is failed with that error's
    exit code and message, and the failure has a short name for the summary line."""
    got = pass_outcome(
        RunStats(requests=1, errors=1),
        [str(fatal)],
        successes=1,
        stop_signal=signal.SIGTERM,
        listing_error="also this",
        api_url="http://x",
        fatal=fatal,
    )
    assert got is not None and got[:2] == outcome and got.message == str(fatal)
    assert got.failure == failure_name(fatal) != "pass error"
