"""Running a whole command: ``sync`` or ``backfill`` under its lock, one pass on an
event loop, the run recorded in ``sync_runs`` and stopped cleanly by SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

import httpx

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
    command = work.command
    lock = RunLock(db, command)
    lock.acquire(wait_s=wait_lock_s)
    result = RunResult(run_id=lock.owner, command=command)
    set_run_id(result.run_id)
    try:
        with db.transaction() as conn:
            runs_store.start_run(
                conn,
                run_id=result.run_id,
                command=command,
                host=socket.gethostname(),
                pid=os.getpid(),
                now=result.started_at,
            )

        def new_engine(client: SmoothClient) -> SyncEngine:
            return SyncEngine(db, client, lock, options, result, progress=progress, masker=masker)

        with _collector_tuned():
            asyncio.run(_run_async(work, client_config, new_engine, transport))
    except BaseException as exc:
        # An unexpected exception must not leave the run recorded as "ok" (status and
        # metrics count "ok" runs as successful passes).
        if result.outcome in ("ok", "partial"):
            result.outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
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
            lock.release()
            set_run_id(None)
    return result


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
    loop = asyncio.get_running_loop()
    async with SmoothClient(client_config, transport=transport) as client:
        engine = new_engine(client)
        result = engine.result

        def on_signal(signum: int) -> None:
            if engine.stop_signal is not None:
                # A second signal means "now": default action, no more waiting.
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            engine.stop_signal = signum
            log.warning(
                "stopping after the writes in flight (signal %s); send it again to stop now",
                signal.Signals(signum).name,
            )

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        fatal: ArchiverError | None = None
        try:
            await work.run(engine)
        except ArchiverError as exc:
            fatal = exc
            # The failure that ended the pass is one of its errors, counted and kept
            # like a task's (the summary, sync_runs, status and health show it).
            result.stats.errors += 1
            result.errors.append(str(exc))
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            result.stats.requests = client.requests
            if engine.artifacts is not None:
                await engine.artifacts.aclose()
            engine.close()
            engine.progress.close()
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
