"""``archiver verify``: re-hash stored blobs against their rows (``--repair``: repair.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from archiver.artifacts.states import FAILED
from archiver.blobs import BlobStore
from archiver.exceptions import ArchiverError
from archiver.store.artifacts import StoredArtifact, artifacts_to_verify
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


def verify_and_report(
    db: Database,
    store: BlobStore,
    task_ids: Sequence[str] | None,
    *,
    echo: Callable[[str], None],
    repairing: bool = False,
) -> tuple[Callable[[bool], list[StoredArtifact]], list[Check]]:
    """``archiver verify``: check the blobs and print one line per problem and a summary,
    which names ``--repair`` when there is something it could fix (and it is not on).

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
        + (
            "; `archiver verify --repair` fetches them again (needs CIRCLEMIND_API_KEY)"
            if bad and not repairing
            else ""
        )
    )

    def todo(retry_failed: bool) -> list[StoredArtifact]:
        return [check.item for check in bad] + (list(failed) if retry_failed else [])

    return todo, bad
