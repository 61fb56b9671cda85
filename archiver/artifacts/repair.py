"""``archiver verify --repair``: fetch missing or corrupt blobs (and, with
``--retry-failed``, failed artifacts) again with fresh links from Get Task.

:class:`RepairSettler` is the artifact settler of settle.py with other rules for what a
failure does: an artifact is fetched again whatever its state, and a failure to fetch it
only notes ``last_error``; the row keeps its state (a stored blob's row stays stored)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from archiver.artifacts.fetch import Fetched
from archiver.artifacts.settle import ArtifactSync, Attempt, SettleResult
from archiver.artifacts.states import PENDING, STORED
from archiver.blobs import BlobStore
from archiver.client import SmoothClient
from archiver.config import ArtifactConfig, ClientConfig
from archiver.exceptions import ApiError, AuthError
from archiver.models import TaskInfo
from archiver.store.artifacts import ArtifactRow, StoredArtifact
from archiver.store.database import Database

log = logging.getLogger(__name__)


class RepairSettler(ArtifactSync):
    """Fetches the given artifacts again, whatever their state; a failure only updates
    ``last_error`` (see the module docstring)."""

    def _done(self, row: ArtifactRow) -> bool:
        return False  # repaired whatever its state

    def _held_back(self, row: ArtifactRow | None, url: str | None) -> bool:
        return False  # an operator asked for it now

    async def _stored(
        self, attempt: Attempt, row: ArtifactRow | None, url: str, fetched: Fetched
    ) -> str:
        if row is not None and row.sha256 and row.sha256 != fetched.blob.sha256:
            log.warning(
                "task %s %s: the API now serves different content (sha256 %s, was %s)",
                attempt.task_id,
                attempt.kind,
                fetched.blob.sha256,
                row.sha256,
            )
        return await super()._stored(attempt, row, url, fetched)

    async def _no_link(
        self,
        task: TaskInfo,
        kind: str,
        row: ArtifactRow | None,
        url: str | None,
        result: SettleResult,
    ) -> str:
        message = (
            f"verify --repair: Get Task gives {kind}_url={url!r} for task {task.id!r} "
            "now, so the blob cannot be fetched again."
        )
        state = row.state if row is not None else PENDING
        await self._save(task.id, kind, {"state": state, "last_error": message})
        result.errors[kind] = message
        return state

    async def _transient(self, attempt: Attempt, message: str) -> str:
        return await self._keep(attempt, message)

    async def _failed(self, attempt: Attempt, message: str) -> str:
        return await self._keep(attempt, message)

    async def _keep(self, attempt: Attempt, message: str) -> str:
        """The re-fetch failed: the row keeps its state and notes why."""
        await self._save(
            attempt.task_id,
            attempt.kind,
            {"state": attempt.current, "attempts": attempt.attempts, "last_error": message},
        )
        attempt.result.errors[attempt.kind] = message
        return attempt.current


async def repair_artifacts(
    db: Database,
    store: BlobStore,
    client_config: ClientConfig,
    config: ArtifactConfig,
    todo: Sequence[StoredArtifact],
    *,
    owner: str,
) -> dict[tuple[str, str], str | None]:
    """Fetch the given artifacts again with fresh links; (task, kind) -> error or None."""

    async def run_db(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def work() -> Any:
            with db.transaction() as conn:
                return fn(conn, *args, **kwargs)

        return await asyncio.to_thread(work)

    by_task: dict[str, list[StoredArtifact]] = {}
    for item in todo:
        by_task.setdefault(item.task_id, []).append(item)
    outcome: dict[tuple[str, str], str | None] = {}
    async with SmoothClient(client_config) as client:
        settler = RepairSettler(
            run_db=run_db, client=client, config=config, owner=owner, store=store
        )
        try:
            await settler.sweep_temporaries()
            for task_id, items in by_task.items():
                kinds = [item.kind for item in items]
                try:
                    task = await client.get_task(
                        task_id, event_t=max(items[0].event_t, 0), downloads=True
                    )
                except AuthError:
                    raise
                except ApiError as exc:
                    for kind in kinds:
                        outcome[(task_id, kind)] = f"Get Task failed: {exc}"
                    continue
                result = await settler.settle(task, event_t=max(items[0].event_t, 0), kinds=kinds)
                for kind in kinds:
                    error = result.errors.get(kind) or result.blob_errors.get(kind)
                    if error is not None:
                        outcome[(task_id, kind)] = error
                    elif result.states.get(kind) == STORED:
                        outcome[(task_id, kind)] = None
                    else:
                        outcome[(task_id, kind)] = "another run holds the task; try again later"
        finally:
            await settler.aclose()
    return outcome


def repair_and_report(
    db: Database,
    store: BlobStore,
    client_config: ClientConfig,
    config: ArtifactConfig,
    todo: Sequence[StoredArtifact],
    *,
    echo: Callable[[str], None],
) -> int:
    """``archiver verify --repair``: fetch ``todo`` again under the ``verify`` lock; prints
    one line per artifact and returns how many could not be repaired."""
    from archiver.store.locks import RunLock

    lock = RunLock(db, "verify")
    try:
        lock.acquire()
        with db.transaction() as conn:
            claimed = set(lock.claim(conn, sorted({item.task_id for item in todo})))
        outcome = asyncio.run(
            repair_artifacts(
                db,
                store,
                client_config,
                config,
                [item for item in todo if item.task_id in claimed],
                owner=lock.owner,
            )
        )
    finally:
        lock.release()
    unrepaired = 0
    for item in todo:
        error = outcome.get(
            (item.task_id, item.kind), "another run is working on this task; try again later"
        )
        if error is None:
            echo(f"repaired {item.task_id} {item.kind}")
        else:
            unrepaired += 1
            echo(f"not repaired {item.task_id} {item.kind}: {error}")
    if todo:
        echo(f"repaired {len(todo) - unrepaired} of {len(todo)}")
    return unrepaired
