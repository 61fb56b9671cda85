"""``archiver verify``: re-hash stored blobs against their rows, and ``--repair`` them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from archiver.artifacts.queries import StoredArtifact, artifacts_to_verify
from archiver.artifacts.settle import ArtifactSync
from archiver.artifacts.states import (
    FAILED,
    STORED,
)
from archiver.blobs import BlobStore
from archiver.client import (
    SmoothClient,
)
from archiver.config import (
    ClientConfig,
    SyncOptions,
)
from archiver.exceptions import (
    ApiError,
    ArchiverError,
    AuthError,
)
from archiver.store.database import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """The outcome of verifying one stored blob."""

    item: StoredArtifact
    problem: str | None  # None (ok), "missing" or "corrupt"
    detail: str = ""


def check_blob(store: BlobStore, item: StoredArtifact) -> Check:
    """Re-read one stored blob and compare size and SHA-256 with its row."""
    if not item.blob_url:
        return Check(item, "missing", "the row has no blob_url")
    target, key = store, store.key_from_url(item.blob_url)
    if key is None:
        target, key = BlobStore.for_blob_url(item.blob_url)
    digest = target.sha256(key)
    if digest is None:
        return Check(item, "missing", "no blob at this URL")
    size, sha = digest
    if size != item.size_bytes:
        return Check(item, "corrupt", f"{size} bytes, the table says {item.size_bytes}")
    if sha != item.sha256:
        return Check(item, "corrupt", f"sha256 {sha}, the table says {item.sha256}")
    return Check(item, None)


def verify_blobs(
    db: Database, store: BlobStore, task_ids: Sequence[str] | None
) -> tuple[list[Check], list[StoredArtifact]]:
    """Check every stored blob (or those of ``task_ids``); also returns the failed rows."""
    with db.reading() as conn:
        stored = artifacts_to_verify(conn, task_ids)
        failed = artifacts_to_verify(conn, task_ids, states=(FAILED,))
    checks = []
    for item in stored:
        try:
            checks.append(check_blob(store, item))
        except ArchiverError as exc:  # unreadable storage: reported per blob, not fatal
            checks.append(Check(item, "missing", f"cannot be read: {exc}"))
    return checks, failed


async def repair_artifacts(
    db: Database,
    store: BlobStore,
    client_config: ClientConfig,
    options: SyncOptions,
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
        sync = ArtifactSync(
            run_db=run_db,
            client=client,
            options=options,
            client_config=client_config,
            owner=owner,
            store=store,
        )
        try:
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
                result = await sync.settle(
                    task, event_t=max(items[0].event_t, 0), kinds=kinds, repair=True
                )
                for kind in kinds:
                    if kind in result.errors:
                        outcome[(task_id, kind)] = result.errors[kind]
                    elif result.states.get(kind) == STORED:
                        outcome[(task_id, kind)] = None
                    else:
                        outcome[(task_id, kind)] = "another run holds the task; try again later"
        finally:
            await sync.aclose()
    return outcome


def verify_and_report(
    db: Database, store: BlobStore, task_ids: Sequence[str] | None, *, echo: Callable[[str], None]
) -> tuple[Callable[[bool], list[StoredArtifact]], list[Check]]:
    """``archiver verify``: check the blobs and print one line per problem and a summary.

    Returns (what --repair would fetch, given --retry-failed or not; the bad checks).
    """
    checks, failed = verify_blobs(db, store, task_ids)
    bad = [check for check in checks if check.problem]
    for check in bad:
        item = check.item
        echo(
            f"{check.problem:<8} {item.task_id} {item.kind:<9} {item.blob_url or '-'}: "
            f"{check.detail}"
        )
    missing = sum(1 for check in bad if check.problem == "missing")
    echo(
        f"verified {len(checks)} stored blob(s): {len(checks) - len(bad)} ok, {missing} "
        f"missing, {len(bad) - missing} corrupt"
        + (
            f"; {len(failed)} artifact(s) recorded as failed are not checked "
            "(see artifacts.last_error; --repair --retry-failed retries them)"
            if failed
            else ""
        )
    )

    def todo(retry_failed: bool) -> list[StoredArtifact]:
        return [check.item for check in bad] + (list(failed) if retry_failed else [])

    return todo, bad


def repair_and_report(
    db: Database,
    store: BlobStore,
    client_config: ClientConfig,
    options: SyncOptions,
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
                options,
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
    echo(f"repaired {len(todo) - unrepaired} of {len(todo)}")
    return unrepaired
