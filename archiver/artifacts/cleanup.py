"""Left-over temporaries: what a transfer killed mid-way leaves in blob storage (a
``.tmp/*.part`` blob of up to ``--max-artifact-size``, or on S3 a multipart upload never
completed). A later write of the same artifact removes its own, but not when the link
expired meanwhile and the artifact failed; so each pass with ``--downloads`` and each
``verify --repair`` removes the ones older than :data:`STALE_TEMPORARY_S`, never one whose
task a live run holds (its transfer may still be in flight, however long it takes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime

from archiver.artifacts.states import RunDb
from archiver.blobs import BlobStore, task_folder
from archiver.exceptions import BlobStoreError
from archiver.store.locks import leased_task_ids
from archiver.timestamps import utcnow

log = logging.getLogger(__name__)

#: A temporary left untouched this long belongs to no transfer (one in flight writes to
#: it all the time, and its task's lease is checked besides).
STALE_TEMPORARY_S = 3 * 3600.0


def remove_stale_temporaries(store: BlobStore, leased: Iterable[str], now: datetime) -> int:
    """Remove the temporaries of ``store`` older than STALE_TEMPORARY_S whose task is not
    among ``leased``; how many were removed."""
    busy = {task_folder(task_id) for task_id in leased}
    removed = 0
    for temporary in store.temporaries():
        if temporary.task_folder in busy or temporary.modified is None:
            continue
        if (now - temporary.modified).total_seconds() >= STALE_TEMPORARY_S:
            store.remove_temporary(temporary)
            removed += 1
    return removed


async def sweep_temporaries(run_db: RunDb, store: BlobStore) -> int:
    """:func:`remove_stale_temporaries` for a pass: a failure is never the pass's end."""
    leased = await run_db(leased_task_ids)
    try:
        removed = await asyncio.to_thread(remove_stale_temporaries, store, leased, utcnow())
    except BlobStoreError as exc:
        # Info: a failing blob store is said loudly by the writes it refuses, once.
        log.info("left-over temporary blobs were not cleaned up: %s", exc)
        return 0
    if removed:
        log.info(
            "removed %d temporary blob(s) under %s/.tmp left by transfers that never finished",
            removed,
            store.url,
        )
    return removed
