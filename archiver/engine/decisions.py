"""The engine's decisions, as pure functions: no event loop, no database, no HTTP.

What a poll reads and stores and whether it finalizes the task, how long a failing task
is held back, whether this pass's 404s may bury a task, where the listing goes next and
what the discovery watermark becomes, and the outcome of a pass. Each is a function of
its arguments (the clock is an argument too), so every rule of docs/architecture.md's
exactly-once invariants is a row of a table in tests/test_decisions.py.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from archiver.config import MAX_PAGE_SIZE, SyncOptions, backoff_after
from archiver.exceptions import (
    ApiUnreachable,
    ApiUrlWrong,
    ArchiverError,
    AuthError,
    CircuitOpen,
    StorageError,
)
from archiver.models import KNOWN_STATUSES, KeyedEvent, TaskInfo
from archiver.stats import EXIT_INTERRUPTED, EXIT_TASK_ERRORS, RunStats
from archiver.timestamps import aware, seconds_in_unit_of, to_seconds, to_utc

#: Longest back-off of a failing task (the first one is SyncOptions.error_backoff_s).
ERROR_BACKOFF_CAP_S = 3600.0
#: Failed passes in a row before a task is held back (the first ones retry next pass).
BACKOFF_AFTER_FAILURES = 3


# --- a task's poll ----------------------------------------------------------------------


@dataclass(frozen=True)
class TaskCursor:
    """Where polling a task resumes, and what earlier passes learnt about it."""

    event_t: int
    full_read: bool
    finalized: bool
    error_count: int
    #: The status the last poll stored (None before the first poll).
    status: str | None = None
    #: When a pass first read the task terminal without finalizing it (a confirming read
    #: on a later pass finalizes it), None otherwise.
    terminal_seen_at: datetime | None = None
    #: Whether the archiver ever saw the task waiting, running or in an unknown status.
    seen_active: bool = False
    #: Polls in a row that found a status the archiver does not know.
    unknown_polls: int = 0

    @classmethod
    def from_row(cls, row: Any) -> TaskCursor:
        """From a row of :func:`archiver.store.tasks.progress_rows`."""
        return cls(
            event_t=row.event_t,
            full_read=row.full_read_at is not None,
            finalized=row.finalized_at is not None,
            error_count=row.error_count,
            status=row.status,
            terminal_seen_at=aware(row.terminal_seen_at),
            seen_active=bool(row.seen_active),
            unknown_polls=row.unknown_status_polls,
        )


@dataclass(frozen=True)
class PollSave:
    """What one poll of one task stores (an :class:`archiver.store.tasks.PollRecord`)."""

    task: TaskInfo
    events: Sequence[KeyedEvent]
    full_read: bool
    finalize: bool
    #: A terminal read that waits for a confirming read on a later pass.
    terminal_seen: bool = False
    #: The task was seen waiting, running or in an unknown status.
    seen_active: bool = False
    #: Polls in a row in an unknown status (0 otherwise), and when to ask again.
    unknown_polls: int = 0
    next_poll_at: datetime | None = None


def first_read(cursor: TaskCursor, *, from_zero: bool) -> int | None:
    """The ``event_t`` to ask Get Task with, or None when there is nothing to read.

    Polls ask for events after ``event_t - 1``, not ``event_t``: an event sharing the
    mark's timestamp that arrives in a later poll is re-read, never skipped. A task read
    terminal on an earlier pass gets one full read that confirms it; a backfill reads
    everything.
    """
    if cursor.finalized:
        return None
    confirming = cursor.terminal_seen_at is not None
    if from_zero or confirming or cursor.event_t <= 0:
        return 0
    return cursor.event_t - 1


def needs_sweep(task: TaskInfo, *, full_read: bool) -> bool:
    """A terminal task is swept from ``event_t=0`` before it can be final: a cursor misses
    events with a null timestamp and events that arrive out of order."""
    return task.is_terminal and not full_read


def newly_unknown_status(task: TaskInfo, cursor: TaskCursor) -> bool:
    """The task reports a status the archiver does not know, and did not last time (it is
    logged once per task)."""
    return task.status not in KNOWN_STATUSES and cursor.status != task.status


def plan_save(
    task: TaskInfo,
    cursor: TaskCursor,
    events: list[KeyedEvent],
    *,
    full_read: bool,
    options: SyncOptions,
    now: datetime,
) -> PollSave:
    """What to store for this read, and whether the task is final now.

    A terminal task is final once a full read has swept its events and either the read
    confirms an earlier pass's terminal read (``confirm_after_s`` later), or the task is
    settled history: never seen active by the archiver and created longer ago than
    ``fresh_within_s`` (a backfill still costs one Get Task per task). A fresh task
    waits for that confirming read, because credits_used and artifact links may still
    settle after the status turns terminal. (With ``--downloads`` its artifacts must also
    be final: the engine ands that in.)

    A status the archiver does not know is stored as sent, never treated as terminal,
    and asked about at a growing interval.
    """
    unknown = task.status not in KNOWN_STATUSES
    terminal = task.is_terminal and full_read
    finalize = False
    if terminal:
        if cursor.terminal_seen_at is not None:
            age = (now - cursor.terminal_seen_at).total_seconds()
            finalize = age >= options.confirm_after_s
        else:
            created = to_utc(task.created_at)
            fresh = cursor.seen_active or created is None
            if created is not None:
                fresh = fresh or (now - created).total_seconds() < options.fresh_within_s
            finalize = not fresh
    unknown_polls = cursor.unknown_polls + 1 if unknown else 0
    next_poll_at = None
    if unknown:
        wait = backoff_after(
            unknown_polls, first_s=options.error_backoff_s, after=1, cap_s=ERROR_BACKOFF_CAP_S
        )
        next_poll_at = now + wait if wait is not None else None
    return PollSave(
        task=task,
        events=events,
        full_read=full_read,
        finalize=finalize,
        terminal_seen=terminal,
        seen_active=not task.is_terminal,
        unknown_polls=unknown_polls,
        next_poll_at=next_poll_at,
    )


def with_artifacts(save: PollSave, *, artifacts_final: bool) -> PollSave:
    """With ``--downloads`` a task is final only once each of its artifacts is in a final
    state (stored, absent, failed); until then later passes read it again."""
    return replace(save, finalize=save.finalize and artifacts_final)


def error_backoff(streak: int, options: SyncOptions) -> timedelta | None:
    """How long a task that failed ``streak`` times in a row before this failure is held
    back: not at all for the first failures (transient faults converge on the next
    clean pass), then doubling up to an hour (see config.backoff_after)."""
    return backoff_after(
        streak + 1,
        first_s=options.error_backoff_s,
        after=BACKOFF_AFTER_FAILURES,
        cap_s=ERROR_BACKOFF_CAP_S,
    )


# --- 404s ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotFoundPlan:
    """What to do with a pass's 404s (see :func:`judge_not_found`)."""

    #: Ids first named in this pass that the API does not know: their rows are removed.
    drop_stubs: list[str] = field(default_factory=list)
    #: Nothing proved the API URL right: the pass is a configuration error (ApiUrlWrong).
    url_wrong: str | None = None
    #: (task id, message) of credible 404s, each counting towards "gone".
    count: list[tuple[str, str]] = field(default_factory=list)
    #: (task id, message) of task errors: a named id the API does not know.
    errors: list[tuple[str, str]] = field(default_factory=list)


def judge_not_found(
    found: Sequence[tuple[str, str]], *, new_explicit: set[str], successes: int, api_url: str
) -> NotFoundPlan:
    """Judge this pass's 404s once the pass knows whether the API URL is right.

    A 404 only counts towards "gone" when a well-formed answer in the same pass (List
    Tasks, or another task's Get Task) proved the API URL right; a mistyped URL answers
    404 for everything and must not bury live tasks. When nothing proved it, the pass is
    a configuration error instead (exit 2) and no task is touched, but an id first named
    in this pass leaves no row behind either way.
    """
    if not found:
        return NotFoundPlan()
    drop = [task_id for task_id, _ in found if task_id in new_explicit]
    if successes == 0:
        shown = ", ".join(task_id for task_id, _ in found[:5])
        return NotFoundPlan(
            drop_stubs=drop,
            url_wrong=(
                f"Get Task answered HTTP 404 for every task asked ({len(found)}: {shown}"
                f"{', ...' if len(found) > 5 else ''}) and no answer proved the API URL "
                f"{api_url} right: check --api-url / ARCHIVER_API_URL "
                "(it should end in /api/v1) and the task ids. No task was recorded as gone."
            ),
        )
    return NotFoundPlan(
        drop_stubs=drop,
        count=[(t, m) for t, m in found if t not in new_explicit],
        errors=[
            (t, f"{m} The API does not know this id; nothing was stored.")
            for t, m in found
            if t in new_explicit
        ],
    )


# --- the listing ---------------------------------------------------------------------------


def page_stamps(tasks: Sequence[TaskInfo], skipped_created_at: Sequence[int | None]) -> list[int]:
    """The created_at values a listing page shows, malformed items' included."""
    stamps = [task.created_at for task in tasks if task.created_at is not None]
    return stamps + [stamp for stamp in skipped_created_at if stamp is not None]


@dataclass(frozen=True)
class PageStep:
    """Where a listing walk goes after a full page."""

    #: The next page's ``t`` and size; None when the walk cannot go on.
    next_t: int | None = None
    size: int = 0
    #: Why the walk stops (a task-level error of the pass), when it does.
    error: str | None = None
    #: A full page of one created_at at the largest page size: that group cannot be
    #: listed any further (recorded for `status`).
    unlisted: int | None = None
    #: Read the same ``t`` again at ``size`` (a page of one created_at, at a bigger size).
    again: bool = False


def next_page(t: int | None, size: int, page_size: int, stamps: Sequence[int]) -> PageStep:
    """After a full page at ``t`` of ``size`` items showing ``stamps``: the next page.

    The next page starts at the oldest ``created_at`` + 1, so the boundary group is
    re-read and tasks sharing a ``created_at`` across a page break are not lost. A page
    made entirely of one ``created_at`` is re-read at the largest page size; only a group
    larger than that cannot be paged through with a strictly-before cursor (``unlisted``).
    A cursor that does not move down (an API ignoring ``t``) stops the walk instead of
    looping forever.
    """
    if not stamps:
        return PageStep(error=f"List Tasks page at t={t} has no created_at to page by")
    oldest = min(stamps)
    unlisted = None
    if oldest == max(stamps):
        if size < MAX_PAGE_SIZE:
            return PageStep(next_t=t, size=MAX_PAGE_SIZE, again=True)
        unlisted, next_t = oldest, oldest
    else:
        next_t = oldest + 1
    if t is not None and next_t >= t:
        return PageStep(
            error=f"List Tasks did not move below t={t} (the next page would start at "
            f"t={next_t}): the API ignored the cursor, so listing stops here",
            unlisted=unlisted,
        )
    return PageStep(next_t=next_t, size=page_size, unlisted=unlisted)


def usable_watermark(known_newest: int | None, *, horizon_s: float) -> int | None:
    """The stored discovery watermark, unless it lies beyond ``horizon_s`` (now plus the
    overlap, in epoch seconds): a created_at in the future (absurd, or in another unit) is
    no watermark, or every later pass would stop on its first page."""
    if known_newest is not None and to_seconds(known_newest) > horizon_s:
        return None
    return known_newest


def stop_below(known_newest: int | None, overlap_s: float) -> int | None:
    """Discovery walks down to this created_at: the watermark minus the overlap (tasks the
    API lists a little late are still found); None walks everything."""
    if known_newest is None:
        return None
    return known_newest - seconds_in_unit_of(known_newest, overlap_s)


def newest_plausible(newest: int | None, stamps: Sequence[int], horizon_s: float) -> int | None:
    """The newest created_at seen so far, ignoring any beyond the horizon."""
    plausible = [s for s in stamps if to_seconds(s) <= horizon_s]
    if not plausible:
        return newest
    return max(plausible) if newest is None else max(newest, *plausible)


def watermark_after_walk(
    newest: int | None, known_newest: int | None, held: Sequence[int | None]
) -> int | None:
    """The discovery watermark after a complete walk. A malformed item without a usable
    id cannot be tracked, so the watermark stays at its created_at (or where it was, when
    that is unreadable) and the next pass lists it again."""
    if None in held:
        return known_newest
    stamps = [stamp for stamp in held if stamp is not None]
    if stamps and newest is not None:
        return min(newest, *stamps)
    return newest


# --- the pass ------------------------------------------------------------------------------


#: What ended a pass, in the few words its summary line names it with (``errors 1 (...)``);
#: the first class that matches.
FAILURE_NAMES: tuple[tuple[type[ArchiverError], str], ...] = (
    (AuthError, "API key rejected"),
    (ApiUrlWrong, "API URL wrong"),
    (ApiUnreachable, "API unreachable"),
    (CircuitOpen, "API failing"),
    (StorageError, "storage error"),
)


class Verdict(NamedTuple):
    """How a pass ended: its outcome, exit code, message and (when it failed as a
    whole) the failure's short name."""

    outcome: str
    exit_code: int
    message: str
    failure: str | None = None


def failure_name(error: ArchiverError) -> str:
    """The short name of an error that ended a pass."""
    for kind, name in FAILURE_NAMES:
        if isinstance(error, kind):
            return name
    return "pass error"


def pass_outcome(
    stats: RunStats,
    errors: Sequence[str],
    *,
    successes: int,
    stop_signal: int | None,
    listing_error: str | None,
    api_url: str,
    fatal: ArchiverError | None = None,
) -> Verdict | None:
    """The outcome, exit code and message of a pass, or None when it stays "ok": the
    rules, in order. ``fatal`` is the error that ended the pass, if one did (the key, the
    URL, the network, the database); the caller counts it among the pass's errors."""
    if fatal is not None:
        return Verdict("failed", fatal.exit_code, str(fatal), failure_name(fatal))
    if stats.requests and not successes and stop_signal is None:
        # Not one well-formed answer: the pass did not archive anything, whatever the
        # reason (each failure is logged); health must not look green.
        return Verdict(
            "failed",
            EXIT_TASK_ERRORS,
            f"no request to the Smooth API at {api_url} succeeded in this "
            f"pass ({stats.requests} sent); see the errors above",
            "no API answer",
        )
    if listing_error is not None and stop_signal is None:
        return Verdict(
            "failed",
            EXIT_TASK_ERRORS,
            f"the listing failed, so new tasks may be missing: {listing_error}",
            "listing failed",
        )
    if stop_signal is not None:
        return Verdict(
            "interrupted",
            EXIT_INTERRUPTED.get(stop_signal, 1),
            f"stopped by signal {signal.Signals(stop_signal).name}",
        )
    skipped = (
        f"{stats.skipped_leased} task(s) skipped: another run held their lease"
        if stats.skipped_leased
        else ""
    )
    if stats.errors:
        failed = (
            f"{stats.errors} error(s), the first: {errors[0]}"
            if errors
            else f"{stats.errors} task(s) failed; see tasks.last_error"
        )
        return Verdict(
            "partial", EXIT_TASK_ERRORS, "; ".join(filter(None, [skipped, failed]))[:2000]
        )
    if skipped:
        # Skipped work is never a silent success: those tasks were not read this pass.
        return Verdict(
            "partial", EXIT_TASK_ERRORS, f"{skipped}; that run or the next pass reads them"
        )
    return None
