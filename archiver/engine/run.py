"""Running a whole command: ``sync`` or ``backfill`` under its lock, one pass on an
event loop, the run recorded in ``sync_runs`` and stopped cleanly by SIGINT/SIGTERM
(:mod:`archiver.stops` says what each signal does)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

import httpx

from archiver import stops
from archiver.client import SmoothClient
from archiver.config import ClientConfig, SyncOptions
from archiver.engine import decisions
from archiver.engine.passes import SyncEngine
from archiver.exceptions import ArchiverError
from archiver.logs import set_run_id
from archiver.progress import Progress
from archiver.stats import RunResult
from archiver.store import runs as runs_store
from archiver.store.database import Database
from archiver.store.locks import RunLock
from archiver.timestamps import utcnow

if TYPE_CHECKING:
    from archiver.masking import Masker

log = logging.getLogger("archiver.engine")

#: Allocations between two young-generation collections during a pass (CPython's default
#: is 700): a poll allocates thousands of short-lived objects, and at the default the
#: collector ran often enough to cost ~15 % of a backfill's CPU (benchmarks/backfill.py).
GC_YOUNG_THRESHOLD = 50_000


@dataclass(frozen=True)
class SyncPass:
    """The work of ``archiver sync``: discover new tasks, poll the active ones."""

    command: ClassVar[str] = "sync"

    async def run(self, engine: SyncEngine) -> None:
        await engine.sync()


@dataclass(frozen=True)
class BackfillPass:
    """The work of ``archiver backfill``: every task created since ``since`` (or the
    tasks ``ids``), each with all its events."""

    command: ClassVar[str] = "backfill"
    since: datetime | None = None
    ids: Sequence[str] | None = None

    async def run(self, engine: SyncEngine) -> None:
        await engine.backfill(since=self.since, ids=self.ids)


#: What :func:`run_command` runs: its ``command`` names the lock and the sync_runs row.
PassWork = SyncPass | BackfillPass


def run_command(
    work: PassWork,
    db: Database,
    client_config: ClientConfig,
    options: SyncOptions,
    *,
    wait_lock_s: float = 0.0,
    progress: Progress | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    masker: Masker | None = None,
) -> RunResult:
    """Run ``work`` (a ``sync`` or ``backfill`` pass) under its command's lock, recording
    the run in ``sync_runs``.

    ``transport`` replaces the HTTP transport (tests feed hostile payloads through it);
    ``masker`` masks what the API sends before anything is stored (``--mask-rules``).
    """
    # From here on a stop signal stops the pass instead of unwinding the command, so the
    # run is always recorded and its lock released (archiver.stops).
    with stops.handling(), stops.in_pass():
        lock = RunLock(db, work.command)
        lock.acquire(wait_s=wait_lock_s, check=stops.check)
        result = RunResult(run_id=lock.owner, command=work.command)
        try:
            _run_locked(work, db, lock, result, client_config, options, progress, transport, masker)
        finally:
            lock.release()
    return result


def _run_locked(
    work: PassWork,
    db: Database,
    lock: RunLock,
    result: RunResult,
    client_config: ClientConfig,
    options: SyncOptions,
    progress: Progress | None,
    transport: httpx.AsyncBaseTransport | None,
    masker: Masker | None,
) -> None:
    """The pass, between its ``sync_runs`` row's start and its outcome."""
    set_run_id(result.run_id)
    try:
        with db.transaction() as conn:
            runs_store.start_run(
                conn,
                run_id=result.run_id,
                command=work.command,
                host=socket.gethostname(),
                pid=os.getpid(),
                now=result.started_at,
            )

        # The pass's --concurrency is what bounds its Get Task requests in flight,
        # whatever the client config was built with.
        client_config = replace(client_config, task_requests=options.concurrency)

        def new_engine(client: SmoothClient) -> SyncEngine:
            return SyncEngine(db, client, lock, options, result, progress=progress, masker=masker)

        with _collector_tuned():
            asyncio.run(_run_async(work, client_config, new_engine, transport))
    except BaseException as exc:
        # An unexpected exception must not leave the run recorded as "ok" (status and
        # metrics count "ok" runs as successful passes).
        if result.outcome in ("ok", "partial"):
            stopped = isinstance(exc, KeyboardInterrupt | stops.StopRequested)
            result.outcome = "interrupted" if stopped else "failed"
            result.message = f"unexpected error: {type(exc).__name__}: {exc}"[:2000]
        raise
    finally:
        result.finished_at = utcnow()
        if masker is not None and result.message:  # the error that ended it may quote content
            result.message = masker.text(result.message)
        try:
            with db.transaction() as conn:
                runs_store.finish_run(
                    conn,
                    result.run_id,
                    outcome=result.outcome,
                    counts=result.stats.stored(),
                    message=result.message,
                    now=result.finished_at,
                )
        finally:
            set_run_id(None)


@contextmanager
def _collector_tuned() -> Iterator[None]:
    """The garbage collector set for a pass: what start-up created (modules, SQLAlchemy's
    and pydantic's structures) is frozen out of every collection, and young collections
    are rarer. Restored afterwards (tests run many passes in one process)."""
    saved = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, saved[1], saved[2])
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()


async def _run_async(
    work: PassWork,
    client_config: ClientConfig,
    new_engine: Callable[[SmoothClient], SyncEngine],
    transport: httpx.AsyncBaseTransport | None,
) -> None:
    async with SmoothClient(client_config, transport=transport) as client:
        engine = new_engine(client)
        result = engine.result
        stopper = _Stopper(engine)
        fatal: ArchiverError | None = None
        with stops.pass_hook(stopper.on_signal):
            if (signum := stops.requested()) is not None:  # before the pass began
                stopper.after_writes(signum)
            try:
                fatal = await _run_pass(work, engine, client)
            except asyncio.CancelledError:
                if not stopper.cancelled:
                    raise  # not a stop of ours
                stopper.main.uncancel()  # "stop now": what was in flight is abandoned
            finally:
                stopper.active = False
        verdict = decisions.pass_outcome(
            result.stats,
            result.errors,
            successes=client.successes,
            stop_signal=engine.stop_signal,
            listing_error=engine.listing_error,
            api_url=client_config.api_url,
            fatal=fatal,
        )
        if verdict is not None:
            result.outcome, result.exit_code, result.message, result.failure = verdict


async def _run_pass(
    work: PassWork, engine: SyncEngine, client: SmoothClient
) -> ArchiverError | None:
    """Run the pass; returns the error that ended it, if one did. That failure is one of
    the pass's errors, counted and kept like a task's (the summary, sync_runs, status and
    health show it)."""
    result = engine.result
    try:
        await work.run(engine)
    except ArchiverError as exc:
        result.stats.errors += 1
        result.errors.append(str(exc))
        return exc
    finally:
        # The database threads first: a "stop now" may cancel the awaits below.
        result.stats.requests = client.requests
        engine.close()
        engine.progress.close()
        if engine.artifacts is not None:
            await engine.artifacts.aclose()
    return None


class _Stopper:
    """What a stop signal does to the running pass (archiver.stops): the first one stops
    it after the writes in flight, a later one cancels what is in flight."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self.loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        self.main = main
        #: The pass is running (a late "stop now" must not cancel the bookkeeping after it).
        self.active = True
        self.cancelled = False

    def on_signal(self, signum: int, arrival: stops.Arrival) -> None:
        """Called in the signal handler: it only schedules."""
        if arrival is stops.Arrival.FIRST:
            self.loop.call_soon_threadsafe(self.after_writes, signum)
        elif arrival is stops.Arrival.NOW:
            self.loop.call_soon_threadsafe(self.now, signum)

    def after_writes(self, signum: int) -> None:
        if self.engine.stop_signal is not None:
            return
        self.engine.stop_signal = signum
        log.warning(
            "stopping after the writes in flight (signal %s); send it again (a second or "
            "more later) to stop now",
            signal.Signals(signum).name,
        )

    def now(self, signum: int) -> None:
        if not self.active:
            return
        self.after_writes(signum)
        log.warning(
            "stopping now (signal %s again): requests and transfers in flight are "
            "abandoned; the run is still recorded as interrupted",
            signal.Signals(signum).name,
        )
        self.cancelled = True
        self.main.cancel()
